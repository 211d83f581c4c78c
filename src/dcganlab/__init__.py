"""dcganlab: train, sample, evaluate and compare the DCGAN family."""

__version__ = "0.1.0"

"""The pipeline's stages, one module each, each a `run` function; cli.py is their command line."""

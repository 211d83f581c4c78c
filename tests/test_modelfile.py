"""The one model-file format (gan/modelfile.py) and the checkpoint write the bytes they wrote
before issue #23, so old files load and resume in new code and new files in old code.

FORMAT_V1 below is how train.py (`_model_blob`), serving.py (`generator_blob`) and
resilience.py (`checkpoint_blob`) built their dicts before the move, kept verbatim: torch.save
of the same dict in the same key order gives the same bytes."""

from __future__ import annotations

import io
from dataclasses import asdict

import pytest
import torch

from dcganlab.core.config import ExperimentParams
from dcganlab.gan.modelfile import ModelSpec, build_generator, load_model, model_blob
from dcganlab.training.resilience import LoopState, Monitor, checkpoint_blob
from dcganlab.training.step import StepNets, build_networks


def _v1_model_blob(G, D, e, channels, size, num_classes, classes, fp) -> dict:  # train._model_blob
    blob = {
        "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
        "experiment": asdict(e),
        "channels": channels,
        "image_size": size,
        "num_classes": num_classes,
        "classes": classes,
        "fingerprint": fp,
    }
    if D is not None:
        blob["discriminator"] = {k: v.detach().cpu() for k, v in D.state_dict().items()}
    return blob


def _v1_generator_blob(G, e, channels, size, num_classes) -> dict:  # serving.generator_blob
    return {
        "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
        "experiment": asdict(e),
        "channels": channels,
        "image_size": size,
        "num_classes": num_classes,
    }


def _v1_checkpoint_blob(st, G, D, opt_g, opt_d, order, monitor, fp) -> dict:  # resilience.checkpoint_blob (CPU)
    ckpt = {
        "G": G.state_dict(),
        "D": D.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "epoch": st.epoch,
        "step": st.step,
        "history": st.history,
        "fingerprint": fp,
        "rng_cpu": torch.get_rng_state(),
        "rng_order": order.get_state(),
        "collapse_streak": monitor.streak.cpu(),
    }
    if st.step:
        ckpt.update(perm=st.perm.cpu(), sums=st.sums.cpu(), collapse_longest=monitor.longest.cpu(), epoch_s=st.epoch_s)
    return ckpt


def _bytes(blob: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    return buffer.getvalue()


@pytest.fixture(params=["dcgan", "cgan"])
def nets(request):
    torch.manual_seed(0)
    e = ExperimentParams(variant=request.param, dataset="digits", ngf=4, ndf=4, z_dim=8)
    k = 10 if request.param == "cgan" else 0
    G, D = build_networks(e, 1, 16, k)
    return e, k, G, D


def test_model_files_are_byte_for_byte_the_old_format(nets):
    e, k, G, D = nets
    spec, classes = ModelSpec(e, 1, 16, k), [str(i) for i in range(10)]
    origin = {"classes": classes, "fingerprint": "0123456789abcdef"}
    assert _bytes(model_blob(spec, G, D, origin)) == _bytes(
        _v1_model_blob(G, D, e, 1, 16, k, classes, origin["fingerprint"])
    )
    assert _bytes(model_blob(spec, G, origin=origin)) == _bytes(
        _v1_model_blob(G, None, e, 1, 16, k, classes, origin["fingerprint"])
    )
    assert _bytes(model_blob(spec, G)) == _bytes(_v1_generator_blob(G, e, 1, 16, k))


def test_an_old_model_file_loads_and_draws_the_same_images(nets, tmp_path):
    e, k, G, D = nets
    path = tmp_path / "model.pt"
    torch.save(_v1_model_blob(G, D, e, 1, 16, k, [str(i) for i in range(10)], "f"), path)
    G2, D2, meta = load_model(path)
    z, labels = torch.randn(4, 8), (torch.arange(4) if k else None)
    assert meta["experiment"] == e and meta["num_classes"] == k and D2 is not None
    assert torch.equal(G.eval()(z, labels), G2(z, labels))
    G3 = build_generator(_v1_generator_blob(G, e, 1, 16, k))  # the logged MLflow model's weights
    assert torch.equal(G.eval()(z, labels), G3(z, labels))


def test_checkpoints_are_byte_for_byte_the_old_format(nets):
    e, k, G, D = nets
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    order = torch.Generator().manual_seed(3)
    settings = type("T", (), {"collapse_real": 0.99, "collapse_fake": 0.01})()
    monitor = Monitor(torch.device("cpu"), settings)
    for position in (
        LoopState(2, 0, [{"epoch": 1}, {"epoch": 2}]),
        LoopState(2, 3, [{"epoch": 1}], torch.arange(8), torch.ones(4), 1.5),
    ):
        monitor.longest = torch.tensor(2.0)
        state = torch.get_rng_state()
        new = _bytes(checkpoint_blob(position, StepNets(G, D, opt_g, opt_d), order, monitor, "fp", torch.device("cpu")))
        torch.set_rng_state(state)
        assert new == _bytes(_v1_checkpoint_blob(position, G, D, opt_g, opt_d, order, monitor, "fp"))

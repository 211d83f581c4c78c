"""The GPU path (issue #22). Tests marked `gpu` need CUDA and are skipped without it;
`scripts/gpu_check.sh` runs them on a machine with a GPU (`pytest -m gpu`). The unmarked ones
run everywhere, so CI guards the GPU code path without a GPU: the one-line error for a missing
GPU, `auto`'s choices for a faked CUDA capability, and the fp16 loss scale in checkpoints.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import free_port, prepare_project, stop_group, tiny_params, wait_http

from dcganlab.core import paths
from dcganlab.gan.modelfile import load_model
from dcganlab.gan.variants import VARIANTS
from dcganlab.training import distributed
from dcganlab.training.accel import resolve
from dcganlab.training.loop import Trainer, train
from dcganlab.training.resilience import GracefulStop
from dcganlab.training.step import StepNets, pick_device, train_step

HAS_CUDA = torch.cuda.is_available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)")]
DEVICES = ["cpu", pytest.param("cuda", marks=gpu)]


def _set_up(p, name: str = "tiny") -> Trainer:
    """What `train` builds before its first step (the checkpoint resumed): no MLflow, no training."""
    return Trainer.set_up(p, name, GracefulStop(), distributed.from_env())


def _reload(p):
    from dcganlab.core.config import load_params

    return load_params(p.root / "params.yaml")


def _set_params(root: Path, **changes) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in changes.items():
        section, field = key.split(".", 1)
        node = raw[section]
        *parents, last = field.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


# ---------------------------------------------------------------- CPU-side: CI guards the GPU path
def test_device_cuda_without_a_gpu_is_a_one_line_error(prepared):
    root = prepared.root
    _set_params(root, **{"train.device": "cuda"})
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run(
        [sys.executable, "-m", "dcganlab", "train", "tiny", "-p", str(root / "params.yaml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip() == "error: train.device is 'cuda' but no CUDA device is available"
    assert not paths.model_path(root, "tiny").exists()


@pytest.mark.parametrize("bf16_supported,amp", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_faked_cuda_device_picks_bf16_or_fp16_and_channels_last(monkeypatch, bf16_supported, amp):
    """The logic, not the kernels: a CUDA device takes bf16 autocast where the GPU has bf16 (Ampere
    and newer), else fp16 with a GradScaler, and channels_last either way; never the CPU's answer."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    a = resolve("auto", "auto", False, torch.device("cuda"), "dcgan", native_bf16=False)
    assert (a.amp, a.channels_last, a.compile, a.device_type) == (amp, True, False, "cuda")
    assert resolve("off", "off", True, torch.device("cuda"), "dcgan").channels_last is False  # explicit wins
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_loss_scale_is_saved_in_the_checkpoint_and_resumed(tmp_path, device):
    """fp16 needs a GradScaler, and its scale (halved on every overflow, doubled after 2000 clean
    steps) is training state: a resumed run must continue with it, not restart at 65536. Older
    checkpoints without it still load (the scaler starts fresh)."""
    p = prepare_project(tmp_path, tiny_params(**{"train.device": device, "train.amp": "fp16"}))
    train(p, "tiny", progress=False)
    ckpt_path = paths.state_dir(p.root, "tiny") / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["scaler"]["scale"] > 0
    ckpt["scaler"]["scale"] = 1024.0  # a scale no fresh scaler has
    torch.save(ckpt, ckpt_path)
    run = _set_up(_reload(p))
    assert run.position.resumed and run.nets.scaler.is_enabled()
    assert run.nets.scaler.get_scale() == 1024.0
    del ckpt["scaler"]  # a checkpoint from before the scaler was saved
    torch.save(ckpt, ckpt_path)
    run = _set_up(_reload(p))
    assert run.position.resumed and run.nets.scaler.get_scale() == 65536.0


@pytest.mark.parametrize(
    "name,half,fp32",
    [
        ("NVIDIA H100 80GB HBM3", 989.4, 66.9),
        ("NVIDIA H100 PCIe", 756.0, 51.2),
        ("NVIDIA H200", 989.4, 66.9),
        ("NVIDIA A100-SXM4-40GB", 312.0, 19.5),
    ],
)
def test_the_gpu_peak_is_the_named_parts_datasheet_figure(monkeypatch, name, half, fp32):
    from dcganlab.bench.gpu import peak_tflops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    peaks = peak_tflops("cuda")
    assert (peaks["half"], peaks["fp32"], peaks["device"]) == (half, fp32, name)
    assert "datasheet" in peaks["source"]


def test_an_unknown_gpu_has_no_peak_and_says_so(monkeypatch):
    from dcganlab.bench.gpu import peak_tflops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Imaginary GPU 9000")
    peaks = peak_tflops("cuda:0")
    assert peaks["half"] is None and "unknown GPU 'Imaginary GPU 9000'" in peaks["source"]


@pytest.mark.slow
def test_bench_gpu_measures_each_precision_and_the_classic_loop(prepared, tmp_path):
    """The GPU bench's code path on the CPU (tiny steps: a check that it runs and what it writes,
    not a measurement): every precision setting's rate and MFU, and the classic-loop comparison."""
    from dataclasses import asdict, replace

    from dcganlab.bench.bench import GPU
    from dcganlab.bench.classic import Setting
    from dcganlab.bench.gpu import PRECISIONS, bench_gpu, table

    s = replace(GPU, warmup=1, steps=1, repeats=1, process_images=64)
    few = {"half+channels_last": PRECISIONS["half+channels_last"]}  # one: each is a process; compiling takes minutes
    out = tmp_path / "bench-gpu.json"
    small = Setting("classic", 16, 3, 4, 16, 64)  # the classic setting's shape (RGB), CPU-sized
    bench_gpu(prepared, s, out, few, small, log=lambda m: None)
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["peak_tflops"]["fp32"] > 0
    for setting in ("tiny", "classic-setting"):
        grid = r["train"][setting]
        assert set(grid) == {"bf16+channels_last"}  # "half" is bf16 off a GPU without bf16
        m = grid["bf16+channels_last"]
        assert (m["amp"], m["channels_last"], m["compile"]) == ("bf16", True, False)
        assert m["images_per_s"] > 0 and m["flops_per_image"] > 0 and 0 < m["mfu"] < 1
        assert m["mfu_against"].startswith("bf16 peak: ")
    assert r["train"]["classic-setting"]["bf16+channels_last"]["channels"] == 3 and r["reference"]["setting"] == asdict(
        small
    )
    assert r["reference"]["images_per_s"] > 0 and r["speedup_vs_classic"] > 0 and 0 < r["reference"]["mfu"] < 1
    lines = table(r).splitlines()  # what `dcganlab bench --gpu` prints
    assert lines[0].startswith("device cpu") and len(lines) == 1 + 2 + 2 and "vs classic" in lines[-1]


# ---------------------------------------------------------------- scripts/gpu_check.sh without a GPU
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--bogus"], "error: unknown option '--bogus' (see --help)"),
        (["--out"], "error: --out needs a value (see --help)"),
        (["--wheels", "/no/such/folder"], "error: --wheels: no folder at /no/such/folder"),
        (["--epochs", "0"], "error: --epochs must be a positive integer, not '0'"),
        (["--python", "no-such-python3"], "error: --python: no interpreter 'no-such-python3'"),
    ],
)
def test_gpu_check_rejects_bad_options_in_one_line(tmp_path, args, message):
    r = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "out"), *args], capture_output=True, text=True, timeout=30
    )
    assert (r.returncode, r.stderr.strip(), r.stdout) == (2, message, "")
    assert not (tmp_path / "out").exists()


def test_gpu_check_help_names_every_option():
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for option in ("--out", "--venv", "--python", "--wheels", "--torch-index", "--epochs", "--cpu-only"):
        assert option in r.stdout


def test_gpu_check_judges_quality_by_the_reports_noise_rule():
    from dcganlab.bench.gpu_check import quality

    cpu = {"epochs": 30, "fid": 5.9, "kid": 0.069, "kid_std": 0.056}
    close = quality({"epochs": 30, "fid": 6.4, "kid": 0.09, "kid_std": 0.05}, cpu)
    assert close["within_noise"] is True and "vs noise 0.15" in close["rule"]
    worse = quality({"epochs": 30, "fid": 40.0, "kid": 0.5, "kid_std": 0.05}, cpu)
    assert worse["within_noise"] is False
    other = quality({"epochs": 5, "fid": 9.0, "kid": 0.2, "kid_std": 0.05}, cpu)
    assert other["within_noise"] is None and other["rule"].startswith("not comparable: 5 epochs")


@pytest.mark.slow
def test_gpu_check_cpu_only_runs_its_steps_and_skips_the_gpu_ones(tmp_path):
    """The script end to end without a GPU, reusing this interpreter's venv (no install): the
    `gpu` tests are selected and skip, the GPU steps are recorded as skipped, one JSON and a log."""
    venv = Path(sys.prefix)  # this interpreter's venv (CI's .venv)
    if not (venv / "bin" / "python").is_file():
        pytest.skip("not running from a venv")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # on a GPU machine too: this checks the CPU-only path
    r = subprocess.run(
        ["bash", str(SCRIPT), "--cpu-only", "--venv", str(venv), "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    status = {s["name"]: s["status"] for s in result["steps"]}
    assert status == {
        "install": "passed",
        "tests marked gpu": "passed",
        "bench --gpu": "skipped",
        "train digits-dcgan on the GPU, quality vs the CPU run": "skipped",
        "torchrun --nproc_per_node 2 (NCCL)": "skipped",
    }
    assert result["passed"] and result["environment"]["cuda_available"] is False
    tests = result["tests"]
    assert tests["tests"] >= 10 and tests["skipped"] == tests["tests"]  # selected by -m gpu, skipped without CUDA
    assert "gpu_check: " in (tmp_path / "out" / "gpu-check.log").read_text()


# ---------------------------------------------------------------- on a GPU
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_a_cuda_training_step_for_every_variant(variant):
    from test_variants import TINY, _setup

    assert variant in TINY, "a new variant needs its tiny settings in tests/test_variants.py"
    e, G, D, opt_g, opt_d, c, size, k = _setup(variant)
    accel = resolve("auto", "auto", False, torch.device("cuda"), variant)
    G, D = accel.prepare(G.cuda()), accel.prepare(D.cuda())
    opt_g, opt_d = VARIANTS[variant].optimizers(e, G, D)
    before = [q.detach().clone() for q in G.parameters()]
    real = torch.rand(6, c, size, size, device="cuda") * 2 - 1
    labels = torch.randint(k, (6,), device="cuda") if k else None
    scaler = accel.scaler()
    out = train_step(StepNets(G, D, opt_g, opt_d, scaler), e, real, labels, k, accel)
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    skipped = scaler.is_enabled() and scaler.get_scale() < 65536.0  # fp16: an overflowing first step is skipped
    assert skipped or any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_auto_on_the_gpu_trains_in_bf16_and_channels_last(prepared):
    prepared.train.device = "cuda"
    run = _set_up(prepared)
    if torch.cuda.is_bf16_supported():
        assert run.accel.amp == "bf16" and not run.nets.scaler.is_enabled()
    else:
        assert run.accel.amp == "fp16" and run.nets.scaler.is_enabled()
    conv = next(q for q in run.nets.D.parameters() if q.dim() == 4)
    assert run.accel.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    summary = train(prepared, "tiny", progress=False)
    assert summary["device"].startswith("cuda")
    G, _, _ = load_model(paths.model_path(prepared.root, "tiny"))
    assert all(torch.isfinite(q).all() for q in G.parameters())


def _exact_fp32(monkeypatch) -> None:
    """fp32 on the GPU as on the CPU: no TF32 tensor cores (10-bit mantissas) for the comparison."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _weights(root: Path) -> dict:
    return torch.load(paths.model_path(root, "tiny"), weights_only=True)["state_dict"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_resume_on_the_gpu_ends_like_an_uninterrupted_gpu_run(tmp_path, monkeypatch):
    # cuDNN's fastest convolutions add in a varying order; exactness needs its deterministic ones
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    raw = tiny_params(**{"train.device": "cuda", "experiments.tiny.epochs": 2})
    whole = prepare_project(tmp_path / "whole", raw)
    train(whole, "tiny", progress=False)
    split = prepare_project(tmp_path / "split", tiny_params(**{"train.device": "cuda"}))
    train(split, "tiny", progress=False)
    _set_params(split.root, **{"experiments.tiny.epochs": 2})
    train(_reload(split), "tiny", progress=False)
    a, b = _weights(whole.root), _weights(split.root)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6) for k in a)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("first,then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_the_other_device(tmp_path, capsys, first, then):
    p = prepare_project(tmp_path, tiny_params(**{"train.device": first, "train.amp": "off"}))
    train(p, "tiny", progress=False)
    _set_params(p.root, **{"train.device": then, "experiments.tiny.epochs": 2})
    summary = train(_reload(p), "tiny", progress=False)
    assert "tiny: resuming at end of epoch 1 of 2 epochs" in capsys.readouterr().out
    assert summary["epochs"] == 2 and summary["device"].startswith(then)
    assert all(torch.isfinite(v.float()).all() for v in _weights(p.root).values())


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_inception_extractor_on_the_gpu_gives_the_cpus_features(tmp_path, monkeypatch):
    from test_evaluate import _random_inception_weights

    from dcganlab.evaluation.inception import load_inception
    from dcganlab.evaluation.metrics import fid_kid_features

    _exact_fp32(monkeypatch)
    weights = _random_inception_weights(tmp_path / "w.pth", monkeypatch)  # torch-fidelity's file format
    on_gpu, status = load_inception("auto", weights, url="", device="cuda")
    on_cpu, _ = load_inception("auto", weights, url="", device="cpu")
    assert status == "used" and next(on_gpu.parameters()).device.type == "cuda"
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fg, fc = on_gpu(x), on_cpu(x)
    assert fg.device.type == "cpu" and fg.shape == (8, 2048)
    assert ((fg - fc).norm() / fc.norm()).item() < 1e-3
    fid_g, fid_c = fid_kid_features(fg[:4], fg[4:], 4)["fid"], fid_kid_features(fc[:4], fc[4:], 4)["fid"]
    assert fid_g == pytest.approx(fid_c, rel=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_fid_on_gpu_features_matches_the_cpus(digit_features, monkeypatch):
    """The domain extractor on the GPU: the same FID/KID as on the CPU, within float tolerance."""
    import copy

    from dcganlab.evaluation.extractor import embed
    from dcganlab.evaluation.metrics import fid_kid_features

    _exact_fp32(monkeypatch)
    net = digit_features.net
    gpu_net = copy.deepcopy(net).cuda()
    a, b = digit_features.a, digit_features.b
    cpu = fid_kid_features(embed(net, a), embed(net, b), 100)
    on_gpu = fid_kid_features(embed(gpu_net, a.cuda()).cpu(), embed(gpu_net, b.cuda()).cpu(), 100)
    assert on_gpu["fid"] == pytest.approx(cpu["fid"], rel=1e-2, abs=1e-3)
    assert on_gpu["kid"] == pytest.approx(cpu["kid"], rel=1e-2, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_a_generator_trained_on_the_gpu_is_served_on_a_machine_without_one(tmp_path):
    from test_mlflow_models import _env, _post, _run_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = prepare_project(tmp_path, tiny_params(**{"train.device": "cuda", "train.log_model": True, "tracking.uri": uri}))
    trained = subprocess.run(
        [sys.executable, "-m", "dcganlab", "train", "tiny", "-p", str(p.root / "params.yaml")],
        cwd=p.root,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((paths.report_dir(p.root, "tiny") / "train.json").read_text())["device"].startswith("cuda")
    port, log = free_port(), open(p.root / "serve.log", "w")
    env = {**_env(p.root), "CUDA_VISIBLE_DEVICES": ""}  # the serving machine has no GPU
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",  # its script may be in a base venv
            f"runs:/{_run_id(p.root, 'tiny')}/generator",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        cwd=p.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, p.root / "serve.log")
        z = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": {"z": z.tolist()}})
        assert status == 200, body
        images = np.asarray(body["predictions"], dtype=np.float32)
        G, _, _ = load_model(paths.model_path(p.root, "tiny"))
        with torch.no_grad():
            ours = G(torch.from_numpy(z), None).numpy()
        assert images.shape == (3, 1, 16, 16)
        np.testing.assert_allclose(images, ours, atol=1e-5)
    finally:
        stop_group(proc)
        log.close()


@pytest.mark.slow
def test_gpu_check_fails_when_nvidia_smi_lists_a_gpu_that_torch_cannot_see(tmp_path):
    """A GPU machine whose torch sees no CUDA (CPU-only build, old driver) must not pass with every
    `gpu` test skipped: the install step fails and the GPU steps are skipped, exit 1."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "python").is_file():
        pytest.skip("not running from a venv")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"  # a driver that lists one GPU
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        ["bash", str(SCRIPT), "--venv", str(venv), "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "sees no CUDA device" in r.stdout + r.stderr
    result = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    status = {s["name"]: s["status"] for s in result["steps"]}
    assert status["install"] == "failed" and not result["passed"]
    assert {name: st for name, st in status.items() if name != "install"} == {
        "tests marked gpu": "skipped",
        "bench --gpu": "skipped",
        "train digits-dcgan on the GPU, quality vs the CPU run": "skipped",
        "torchrun --nproc_per_node 2 (NCCL)": "skipped",
    }

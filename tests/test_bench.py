"""bench: every measurement runs, bench.json holds sane numbers, the profiler leaves no trace."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from dcganlab.bench.bench import BenchSettings, _our_loop
from dcganlab.cli import app


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_writes_every_measurement(prepared):
    out = prepared.root / "reports" / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--photos",
            "12",
            "--eval-samples",
            "40",
            "--process-repeats",
            "0",
            "-p",
            str(prepared.root / "params.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "train_speedup_vs_reference" in result.output and "prepare_scaling_2_workers" in result.output
    r = json.loads(out.read_text())
    assert not list(out.parent.glob(".bench.tmp*"))  # written atomically

    assert r["baseline"] == "tiny" and r["data"]["digits"] == "data/processed/digits"  # the project's own data
    assert {"cpu", "cpu_count", "torch", "torch_threads"} <= set(r["machine"])
    assert r["settings"] == {
        "warmup": 1,
        "steps": 2,
        "profile_steps": 10,
        "photos": 12,
        "eval_samples": 40,
        "repeats": 5,
        "process_repeats": 0,
        "process_images": 2048,
        "share_epochs": 8,
        "share_threads": 0,
    }
    assert set(r["machine"]["cpu_path"]) == {"isa", "onednn_max_isa", "native_bf16", "threads"}
    assert "CPU path: ISA" in result.output
    assert (
        "whole_process" not in r and "sharing" not in r and r["cpu_peak"]["fp32_gflops"] > 0
    )  # --process-repeats 0 skips it
    measured = [
        r["train"]["tiny"],
        r["reference"],
        r["evaluate"],
        *(r["prepare"][k] for k in ("1_worker", "2_workers", "in_process_default")),
    ]
    for m in measured:
        assert _positive(m["peak_rss_mb"]) and m["peak_rss_mb"] >= m["start_rss_mb"] > 0
        assert m["peak_children_uss_mb"] >= 0
    assert r["prepare"]["2_workers"]["peak_children_uss_mb"] > 0  # the pool's workers were seen
    ours, ref = r["train"]["tiny"], r["reference"]
    assert _positive(ours["images_per_s"]) and _positive(ref["images_per_s"]) and ref["loader_workers"] == 2
    assert math.isclose(r["train_speedup_vs_reference"], ours["images_per_s"] / ref["images_per_s"])
    for m in (ours, ref):  # the median of 5 repeats, never faster than the best one
        assert len(m["repeat_seconds"]) == 5 and m["images_per_s_best"] >= m["images_per_s"]
        assert math.isclose(m["images_per_s"], 2 * 16 / sorted(m["repeat_seconds"])[2])

    p = r["step_profile"]
    assert 0 <= r["step_overhead_fraction"] == p["step_overhead_fraction"] < 1
    assert _positive(p["forward_ms"]) and _positive(p["backward_ms"]) and _positive(p["optimizer_ms"])
    assert math.isclose(
        p["forward_ms"] + p["backward_ms"] + p["optimizer_ms"] + p["other_ms"], p["step_ms"], rel_tol=1e-6
    )

    prep = r["prepare"]
    assert prep["identical_output"] is True
    assert [prep[k]["workers"] for k in ("1_worker", "2_workers")] == [1, 2]
    assert prep["1_worker"]["opencv_threads"] == 1 and prep["1_worker"]["photos"] == 12
    assert prep["1_worker"]["kept"] == prep["2_workers"]["kept"] > 0
    assert math.isclose(
        r["prepare_scaling_2_workers"], prep["2_workers"]["images_per_s"] / prep["1_worker"]["images_per_s"]
    )
    assert math.isclose(
        r["prepare_2_workers_vs_in_process"],
        prep["2_workers"]["images_per_s"] / prep["in_process_default"]["images_per_s"],
    )
    ev = r["evaluate"]
    assert ev["samples"] == 40 and _positive(ev["seconds_per_1000_samples"])
    assert math.isclose(
        ev["seconds_per_1000_samples"], (ev["generate_s"] + ev["fid_kid_s"] + ev["floor_s"]) * 1000 / 40
    )


def test_bench_rejects_an_unknown_experiment(project):
    result = CliRunner().invoke(app, ["bench", "-e", "nope", "-p", str(project)])
    assert result.exit_code == 2 and "unknown experiment 'nope'" in result.output
    result = CliRunner().invoke(app, ["bench", "--share-threads", "-1", "-p", str(project)])
    assert result.exit_code != 0 and result.output.strip() == "error: --share-threads must be in 0..1024"


def test_profiling_a_step_restores_backward_and_optimizers(prepared):
    from dcganlab.core import paths

    backward = torch.Tensor.backward
    r = _our_loop(
        prepared,
        "tiny",
        str(paths.processed_dir(prepared.root, "digits")),
        "cpu",
        BenchSettings(warmup=1, steps=2, profile_steps=2),
        True,
    )
    assert torch.Tensor.backward is backward
    assert r["profile"]["steps"] == 2 and r["images_per_s"] > 0 and r["batch_size"] == 16
    x = torch.zeros(1, requires_grad=True)
    (x * 2).sum().backward()  # still the real backward
    assert x.grad.item() == 2


@pytest.mark.slow
def test_whole_process_comparison_runs_both_sides_alternating(prepared, tmp_path):
    """dcganlab train and the classic script, each a fresh process, on the same tiny setting."""
    from dcganlab.bench.classic import Setting, compare

    prepared.train.amp = prepared.train.channels_last = "off"  # fp32 both sides: the MFU peaks match
    seen: list[str] = []
    w = compare(prepared, Setting("tiny", 16, 1, 4, 8, 32), tmp_path, repeats=2, log=seen.append)
    assert [m.split()[2] for m in seen if m.startswith("bench: tiny ")] == ["classic", "dcganlab"] * 2  # alternating
    assert w["setting"] == {"name": "tiny", "image_size": 16, "channels": 1, "width": 4, "batch_size": 8, "images": 32}
    assert _positive(w["new_store_s"])
    for side in ("classic", "dcganlab"):
        m = w[side]
        assert len(m["runs"]) == 2 and m["precision"] == "fp32"
        assert all(r["load_average"] >= 0 for r in m["runs"])
        assert m["wall_s"] in [r["wall_s"] for r in m["runs"]]  # a median of real runs
        assert all(_positive(r["peak_rss_mb"]) and _positive(r["loop_images_per_s"]) for r in m["runs"])
        assert 0 < m["mfu"] < 1
    assert math.isclose(w["wall_speedup"], w["classic"]["wall_s"] / w["dcganlab"]["wall_s"])
    # the same images on both sides: 32 PNG files, and the prepared array dcganlab trains on
    assert len(list((tmp_path / "tiny" / "png").rglob("*.png"))) == 32
    assert (tmp_path / "tiny" / "mlflow.db").is_file()  # made (and timed) once; the timed runs reuse it


def test_flops_per_image_counts_the_dcgan_step(tmp_path, prepared):
    """FlopCounterMode over one step: the DCGAN's convolutions, forward + backward, per image."""
    from dcganlab.bench.classic import Setting, flops_per_image, make_project

    params_file = make_project(prepared, Setting("t", 16, 1, 4, 8, 16), tmp_path)
    f = flops_per_image(params_file)
    small = f["flops_per_image"]
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text().replace("ngf: 4", "ngf: 8"))
    assert flops_per_image(params_file)["flops_per_image"] > small > 0  # a wider G costs more


def test_cpu_peak_is_cores_times_clock_times_flop_per_cycle():
    from dcganlab.bench.classic import cpu_peak, mfu

    p = cpu_peak()
    assert p["cores"] >= 1 and p["ghz"] > 0 and p["bf16_flop_per_cycle"] >= p["fp32_flop_per_cycle"] >= 16
    assert math.isclose(p["fp32_gflops"], round(p["cores"] * p["ghz"] * p["fp32_flop_per_cycle"], 1))
    assert math.isclose(mfu(1e9, 10.0, 100.0), 0.1)


def test_classic_script_rejects_a_folder_without_images(tmp_path):
    from dcganlab.bench.classic_loop import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "missing"), "--outf", str(tmp_path / "out")])
    assert "holds no class folders of PNG files" in str(stop.value.code)


def test_sharing_runs_real_trainings_beside_a_neighbour_and_two_at_once(prepared, tmp_path):
    from dcganlab.bench.classic import Setting
    from dcganlab.bench.share import sharing

    r = sharing(prepared, Setting("share", 16, 1, 8, 16, 64), tmp_path / "share", epochs=1, log=lambda m: None)
    assert r["setting"]["threads"] == "share"
    for run in (r["alone"], r["beside_neighbour"], *r["two_at_once"]["serial"], *r["two_at_once"]["together"]):
        assert _positive(run["images_per_s"]) and run["threads_at_end"] >= 1
    assert math.isclose(r["kept"], r["beside_neighbour"]["images_per_s"] / r["alone"]["images_per_s"], rel_tol=1e-2)
    two = r["two_at_once"]
    assert math.isclose(two["together_vs_serial"], two["serial_wall_s"] / two["together_wall_s"], rel_tol=1e-2)

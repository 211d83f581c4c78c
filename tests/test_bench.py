"""bench: every measurement runs, bench.json holds sane numbers, the profiler leaves no trace."""
import json
import math

import torch
from typer.testing import CliRunner

from dcganlab.bench import BenchSettings, _our_loop
from dcganlab.cli import app


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_writes_every_measurement(prepared):
    out = prepared.root / "reports" / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--steps", "2", "--warmup", "1", "--photos", "12",
                                      "--eval-samples", "40", "-p", str(prepared.root / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "train_speedup_vs_reference" in result.output and "prepare_scaling_2_workers" in result.output
    r = json.loads(out.read_text())
    assert not list(out.parent.glob(".bench.tmp*"))  # written atomically

    assert r["baseline"] == "tiny" and r["data"]["digits"] == "data/processed/digits"  # the project's own data
    assert {"cpu", "cpu_count", "torch", "torch_threads"} <= set(r["machine"])
    assert r["settings"] == {"warmup": 1, "steps": 2, "profile_steps": 10, "photos": 12, "eval_samples": 40, "repeats": 5}
    measured = [r["train"]["tiny"], r["reference"], r["evaluate"], *(r["prepare"][k] for k in
                                                                     ("1_worker", "2_workers", "in_process_default"))]
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
    assert math.isclose(p["forward_ms"] + p["backward_ms"] + p["optimizer_ms"] + p["other_ms"], p["step_ms"], rel_tol=1e-6)

    prep = r["prepare"]
    assert prep["identical_output"] is True
    assert [prep[k]["workers"] for k in ("1_worker", "2_workers")] == [1, 2]
    assert prep["1_worker"]["opencv_threads"] == 1 and prep["1_worker"]["photos"] == 12
    assert prep["1_worker"]["kept"] == prep["2_workers"]["kept"] > 0
    assert math.isclose(r["prepare_scaling_2_workers"], prep["2_workers"]["images_per_s"] / prep["1_worker"]["images_per_s"])
    assert math.isclose(r["prepare_2_workers_vs_in_process"],
                        prep["2_workers"]["images_per_s"] / prep["in_process_default"]["images_per_s"])
    ev = r["evaluate"]
    assert ev["samples"] == 40 and _positive(ev["seconds_per_1000_samples"])
    assert math.isclose(ev["seconds_per_1000_samples"], (ev["generate_s"] + ev["fid_kid_s"] + ev["floor_s"]) * 1000 / 40)


def test_bench_rejects_an_unknown_experiment(project):
    result = CliRunner().invoke(app, ["bench", "-e", "nope", "-p", str(project)])
    assert result.exit_code == 2 and "unknown experiment 'nope'" in result.output


def test_profiling_a_step_restores_backward_and_optimizers(prepared):
    from dcganlab import paths

    backward = torch.Tensor.backward
    r = _our_loop(prepared, "tiny", str(paths.processed_dir(prepared.root, "digits")), "cpu",
                  BenchSettings(warmup=1, steps=2, profile_steps=2), True)
    assert torch.Tensor.backward is backward
    assert r["profile"]["steps"] == 2 and r["images_per_s"] > 0 and r["batch_size"] == 16
    x = torch.zeros(1, requires_grad=True)
    (x * 2).sum().backward()  # still the real backward
    assert x.grad.item() == 2

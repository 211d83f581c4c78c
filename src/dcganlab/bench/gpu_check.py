"""The Python half of scripts/gpu_check.sh: judge the GPU run's quality and gather every step's
result into one JSON.

  python -m dcganlab.bench.gpu_check quality GPU_METRICS CPU_METRICS EXPERIMENT OUT_JSON
  python -m dcganlab.bench.gpu_check summary OUT_DIR

`quality` compares the GPU-trained experiment's evaluation with the committed CPU run's
(reports/metrics.json) by the report's noise rule (claims.compare): the KID difference against
2 x the combined KID subset std. `summary` folds OUT_DIR/steps/*.json (one per script step),
the bench and the quality verdict into OUT_DIR/gpu-check.json.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def write_json(path: Path, data) -> None:
    """Atomically, as atomic.write_json, but with the standard library only: the summary must be
    written even when the install step failed (no numpy)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def quality(gpu: dict, cpu: dict) -> dict:
    """FID and KID of both runs and whether they agree within noise (the same epochs only)."""
    keys = ("epochs", "fid", "kid", "kid_std", "fid_real_floor", "extractor")
    out = {"gpu": {k: gpu.get(k) for k in keys}, "cpu": {k: cpu.get(k) for k in keys}}
    if gpu.get("epochs") != cpu.get("epochs"):
        return {
            **out,
            "within_noise": None,
            "rule": f"not comparable: {gpu.get('epochs')} epochs on the GPU, {cpu.get('epochs')} in the CPU run",
        }
    d = gpu["kid"] - cpu["kid"]
    noise = 2 * math.hypot(gpu["kid_std"], cpu["kid_std"])
    return {
        **out,
        "within_noise": abs(d) <= noise,
        "rule": f"KID difference {d:+.3g} vs noise {noise:.3g} (2 x combined subset std, as claims.compare)",
    }


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def summary(out: Path) -> dict:
    """gpu-check.json: the steps in order (status, seconds), the bench's headline and the quality verdict."""
    steps = [_read(p) for p in sorted((out / "steps").glob("*.json"))]
    result: dict = {"steps": steps, "passed": all(s["status"] in ("passed", "skipped") for s in steps)}
    for name in ("environment", "tests", "quality", "ddp"):
        if (out / f"{name}.json").is_file():
            result[name] = _read(out / f"{name}.json")
    bench = _read(out / "bench-gpu.json")
    if bench:
        result["bench"] = {
            "device": bench["device"],
            "peak_tflops": bench["peak_tflops"],
            "speedup_vs_classic": bench["speedup_vs_classic"],
            "train": {
                setting: {
                    label: {k: m.get(k) for k in ("images_per_s", "mfu", "mfu_against", "cuda_peak_allocated_mb")}
                    for label, m in grid.items()
                }
                for setting, grid in bench["train"].items()
            },
            "classic_images_per_s": bench["reference"]["images_per_s"],
        }
    write_json(out / "gpu-check.json", result)
    return result


def tests(junit: Path) -> dict:
    """Counts from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "quality":
        gpu_path, cpu_path, name, out = args
        verdict = quality(json.loads(Path(gpu_path).read_text()), json.loads(Path(cpu_path).read_text())[name])
        write_json(Path(out), verdict)
        print(
            f"quality {name}: this run FID {verdict['gpu']['fid']:.3f} vs CPU {verdict['cpu']['fid']:.3f}; {verdict['rule']}"
        )
        return 0 if verdict["within_noise"] is not False else 1
    if command == "tests":
        junit, out = args
        write_json(Path(out), tests(Path(junit)))
        return 0
    if command == "summary":
        return 0 if summary(Path(args[0]))["passed"] else 1
    print(f"error: unknown command '{command}' (quality, tests or summary)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

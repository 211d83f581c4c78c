"""Atomic writes: complete files only, and equal content gives equal bytes (stable DVC hashes)."""

import os
import subprocess
import sys

import pytest
import torch

from dcganlab.core.atomic import save_torch, write_json


def test_equal_tensors_saved_by_two_processes_give_identical_bytes(tmp_path):
    # each process has its own pid, so its own temp file name; the bytes must not depend on it
    code = (
        "import sys, torch; from dcganlab.core.atomic import save_torch; "
        "torch.manual_seed(0); save_torch(sys.argv[1], {'w': torch.randn(3, 3), 'epoch': 2})"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for name in ("a.pt", "b.pt"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, env=env)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.load(tmp_path / "a.pt", weights_only=True)["epoch"] == 2


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"fid": 1.0})
    with pytest.raises(TypeError):
        write_json(target, {"fid": object()})  # not serialisable: fails half-way
    assert target.read_text().strip().startswith("{") and "1.0" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    save_torch(tmp_path / "x.pt", {"w": torch.zeros(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "x.pt"]

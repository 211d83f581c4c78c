"""A stage's share of the CPU (cpu_share.py): affinity, cgroup quota, the registry of running
stages, cores busy elsewhere, and the `train.threads` override."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import prepare_project, tiny_params, write_params

from dcganlab.bench.classic import fresh_training
from dcganlab.core import cpu_share
from dcganlab.core.cpu_share import BusyMeter, Entry, quota_cores, running, share, usable_cores


@pytest.fixture
def registry(tmp_path, monkeypatch):
    folder = tmp_path / "stages"
    monkeypatch.setenv(cpu_share.REGISTRY_ENV, str(folder))
    return folder


HOLDER = textwrap.dedent("""
    import sys, time
    from dcganlab.core.cpu_share import Entry
    from pathlib import Path
    Entry.register(Path(sys.argv[1]), "train", {int(c) for c in sys.argv[2].split(",")})
    print("registered", flush=True)
    time.sleep(120)
""")


def hold(folder, cores="0,1"):
    """Another process registered as a running stage on `cores`, until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), cores],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout.readline().strip() == "registered"
    return proc


# ---------------------------------------------------------------- the arithmetic
@pytest.mark.parametrize(
    "cores,peers,busy,expected",
    [
        (2, 0, None, 2),
        (2, 1, None, 1),
        (4, 1, None, 2),
        (4, 3, None, 1),
        (1, 5, None, 1),
        (2, 0, 0.2, 2),  # a little background work: keep both cores
        (2, 0, 1.0, 1),  # one core kept busy by another program
        (2, 0, 2.0, 1),  # everything busy: still one thread
        (8, 1, 2.0, 4),
        (8, 0, 5.4, 3),
    ],
)
def test_share(cores, peers, busy, expected):
    assert share(cores, peers, busy) == expected


def test_affinity_and_quota_decide_the_usable_cores():
    assert usable_cores({0, 1, 2, 3}) == 4
    assert usable_cores({0, 1, 2, 3}, quota=1.5) == 2  # 1.5 cores of quota: 2 threads at 75%
    assert usable_cores({0, 1, 2, 3}, quota=0.5) == 1
    assert usable_cores({5}, quota=8) == 1  # pinned to one core: the quota does not add any
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_quota_is_read_from_cgroup_v2_the_tightest_on_the_path(tmp_path):
    fs, proc = tmp_path / "cgroup", tmp_path / "self-cgroup"
    (fs / "user" / "job").mkdir(parents=True)
    proc.write_text("0::/user/job\n")
    assert quota_cores(fs, proc) is None
    (fs / "user" / "job" / "cpu.max").write_text("max 100000\n")
    assert quota_cores(fs, proc) is None
    (fs / "user" / "cpu.max").write_text("150000 100000\n")
    assert quota_cores(fs, proc) == 1.5
    (fs / "user" / "job" / "cpu.max").write_text("50000 100000\n")
    assert quota_cores(fs, proc) == 0.5


def test_quota_is_read_from_cgroup_v1(tmp_path):
    fs, proc = tmp_path / "cgroup", tmp_path / "self-cgroup"
    (fs / "cpu").mkdir(parents=True)
    proc.write_text("4:cpu,cpuacct:/\n")
    (fs / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (fs / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cores(fs, proc) is None
    (fs / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert quota_cores(fs, proc) == 3.0


# ---------------------------------------------------------------- the registry
def test_two_stages_registered_at_once_each_take_half(registry):
    other = hold(registry)
    try:
        assert [e["stage"] for e in running(registry, {0, 1})] == ["train"]
        me = Entry.register(registry, "evaluate", {0, 1})
        try:
            assert len(running(registry, {0, 1}, me.path)) == 1  # not counting itself
            assert share(2, len(running(registry, {0, 1}, me.path)), None) == 1
        finally:
            me.close()
    finally:
        other.kill()
        other.wait()
    assert running(registry, {0, 1}) == []
    assert list(registry.glob("*.json")) == []  # the dead stage's file was removed


def test_a_stage_on_other_cores_is_not_counted(registry):
    other = hold(registry, cores="2,3")
    try:
        assert running(registry, {0, 1}) == []
        assert len(running(registry, {1, 2})) == 1
    finally:
        other.kill()
        other.wait()


def test_a_dead_stage_is_recognised_whatever_its_pid(registry):
    """A file left by a killed process (its PID may be anyone's now) is not a running stage."""
    registry.mkdir()
    (registry / f"{os.getpid()}-1.json").write_text(json.dumps({"pid": os.getpid(), "stage": "train", "cores": [0, 1]}))
    assert running(registry, {0, 1}) == []
    assert list(registry.glob("*.json")) == []


def test_claimed_sets_threads_and_restores_them(registry, monkeypatch):
    monkeypatch.setattr(cpu_share, "affinity", lambda: {0, 1})
    monkeypatch.setattr(cpu_share, "quota_cores", lambda: None)
    monkeypatch.setattr(BusyMeter, "read", lambda self: None)
    before = torch.get_num_threads()
    other = hold(registry)
    try:
        with cpu_share.claimed("evaluate") as mine:
            assert torch.get_num_threads() == 1 and mine.threads == 1
            assert len(list(registry.glob("*.json"))) == 2
            cpu_share.for_training(3)  # train.threads = 3: fixed, whatever else runs
            assert torch.get_num_threads() == 3
            other.kill()
            other.wait()
            assert mine.adjust(force=True) == 3
            cpu_share.for_training(0)  # back to the share: the peer is gone
            assert torch.get_num_threads() == 2
    finally:
        other.kill()
        other.wait()
    assert torch.get_num_threads() == before
    assert list(registry.glob("*.json")) == []


# ---------------------------------------------------------------- cores busy elsewhere
def _stat(busy0: int, busy1: int) -> str:
    """A /proc/stat with two CPUs whose busy ticks are busy0, busy1 (idle 1000 each)."""
    return (
        f"cpu  {busy0 + busy1} 0 0 2000 0 0 0 0 0 0\n"
        f"cpu0 {busy0} 0 0 1000 0 0 0 0 0 0\ncpu1 {busy1} 0 0 1000 0 0 0 0 0 0\nintr 1 2 3\n"
    )


def test_busy_meter_counts_other_processes_busy_time(tmp_path, monkeypatch):
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    clock = {"wall": 100.0, "own": 5.0}
    monkeypatch.setattr(cpu_share.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(cpu_share.os, "times", lambda: (clock["own"], 0.0, 0.0, 0.0, 0.0))
    meter = BusyMeter({0, 1}, stat)
    stat.write_text(_stat(0, 0))
    assert meter.read() is None  # the first reading only starts the clock
    # 4 s later: 2 cores x 4 s busy, of which this process used 4 s -> others kept 1 core busy
    clock["wall"], clock["own"] = 104.0, 9.0
    stat.write_text(_stat(4 * hz, 4 * hz))
    assert meter.read() == pytest.approx(1.0)
    # a CPU outside the affinity does not count
    assert BusyMeter({0}, stat).read() is None


# ---------------------------------------------------------------- through the real command
def test_train_takes_half_the_cores_beside_a_running_stage(tmp_path, registry):
    """`dcganlab train` with another dcganlab stage registered on the same cores trains with
    half the threads (train.json says so); with train.threads set, with that many."""
    cores = len(os.sched_getaffinity(0))
    p = prepare_project(tmp_path / "proj", tiny_params(**{"experiments.tiny.epochs": 1}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), cpu_share.REGISTRY_ENV: str(registry)}
    env.pop("MLFLOW_TRACKING_URI", None)
    other = hold(registry, cores=",".join(str(c) for c in os.sched_getaffinity(0)))
    try:

        def train(threads: int) -> dict:
            params = tiny_params(**{"experiments.tiny.epochs": 1, "train.threads": threads})
            write_params(p.root, params)
            fresh_training(p.root)
            subprocess.run(
                [sys.executable, "-m", "dcganlab", "train", "tiny"],
                cwd=p.root,
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )
            return json.loads((p.root / "reports/tiny/train.json").read_text())

        assert train(0)["cpu"]["threads"] == max(1, cores // 2)
        assert train(3)["cpu"]["threads"] == 3
    finally:
        other.kill()
        other.wait()

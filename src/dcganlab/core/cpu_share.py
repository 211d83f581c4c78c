"""How many threads a dcganlab stage uses: its share of the CPU, not the whole machine.

torch starts one OpenMP thread per core. Two such processes on the same cores (`dvc queue
start -j 2`, a training beside an evaluation, a CI runner shared with other jobs) oversubscribe
them: each process's threads wait at barriers for a thread the other process holds, and on 2
cores a training fell from ~500 to 13-35 img/s (docs/performance.md). So a stage's threads are

    min(its cores // (1 + other dcganlab stages on those cores),
        its cores - cores kept busy by other programs, rounded)

and at least 1, where
- its cores: the CPUs it may run on (affinity), capped by its cgroup's CPU quota;
- other dcganlab stages: a registry of running stages for this user on this machine (queued
  experiments run in copies of the project, so a per-project registry would not see them). Each
  stage holds a shared `flock` on its own file for its whole life: the kernel drops the lock when
  the process dies, so a dead stage's entry is recognised (and removed) whatever its PID becomes;
- cores busy elsewhere: /proc/stat's busy time on its cores minus its own CPU time, over the last
  few seconds (Linux only; elsewhere only the registry counts).

A training re-reads both every few seconds (`adjust`), so when a neighbour finishes it takes its
cores back. `train.threads` > 0 fixes every stage's count (the stage stays registered, so the
others still leave it its share). The last bits of a training's weights depend on its thread
count (oneDNN splits its reductions by thread), so for bit-identical reruns on a machine whose
load changes, fix `train.threads`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ADJUST_EVERY_S = 2.0  # how often a training re-reads the registry and /proc/stat
REGISTRY_ENV = "DCGANLAB_STAGE_REGISTRY"  # tests point this at a temp folder


# ---------------------------------------------------------------- the cores this process may use
def affinity() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _cgroup_dir(proc_cgroup: str, fs: Path) -> Path | None:
    """The cgroup-v2 folder of this process (`0::/path` in /proc/self/cgroup), if mounted."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return fs / line[3:].lstrip("/")
    return None


def quota_cores(fs: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores, the tightest from its folder up to the
    root (cgroup v2 cpu.max; v1 cpu.cfs_quota_us / cpu.cfs_period_us); None when there is none."""
    try:
        here = _cgroup_dir(proc_cgroup.read_text(), fs)
    except OSError:
        here = None
    folders = [here, *(p for p in here.parents if p == fs or fs in p.parents)] if here is not None else []
    folders += [fs / "cpu", fs / "cpu,cpuacct"]  # cgroup v1 hierarchies
    return min((q for q in map(_quota_in, folders) if q), default=None)


def _quota_in(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores(cores: set[int] | None = None, quota: float | None = None) -> int:
    """Cores this process may keep busy: its affinity, capped by its cgroup quota (rounded up:
    a quota of 1.5 cores still runs 2 threads at 75%)."""
    n = len(affinity() if cores is None else cores)
    return max(1, min(n, math.ceil(quota))) if quota else n


# ---------------------------------------------------------------- the registry of running stages
def registry_dir() -> Path:
    given = os.environ.get(REGISTRY_ENV)
    return Path(given) if given else Path(tempfile.gettempdir()) / f"dcganlab-{os.getuid()}" / "stages"


@dataclass
class Entry:
    """This process's file in the registry, held with a shared flock until the process ends."""

    path: Path
    fd: int

    @classmethod
    def register(cls, folder: Path, stage: str, cores: set[int]) -> "Entry":
        """Written under a temp name, locked, then renamed into place, so that no other stage can
        ever see the file unlocked (and take it for a dead stage's)."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}-{time.monotonic_ns()}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.write(fd, json.dumps({"pid": os.getpid(), "stage": stage, "cores": sorted(cores)}).encode())
        path = tmp.with_name(tmp.name[1:-4] + ".json")
        os.rename(tmp, path)
        return cls(path, fd)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def running(folder: Path, cores: set[int], me: Path | None = None) -> list[dict]:
    """The live stages (other than `me`) whose cores overlap `cores`. A file nobody holds
    is a dead stage's: removed."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path == me:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # it ended just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a live stage
                entry = _read_entry(fd)
                if entry is not None and cores & set(entry.get("cores", [])):
                    found.append(entry)
            else:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return found


def _read_entry(fd: int) -> dict | None:
    try:
        return json.loads(os.read(fd, 65536) or b"null")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- cores busy elsewhere
def _busy_ticks(cores: set[int], stat: str) -> int:
    """Busy clock ticks of `cores` since boot, from /proc/stat's per-CPU lines."""
    total = 0
    for line in stat.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
            total += user + nice + system + irq + softirq + steal
    return total


@dataclass
class BusyMeter:
    """Cores kept busy by other processes, measured between two calls of `read`."""

    cores: set[int]
    stat: Path = Path("/proc/stat")
    last: tuple[float, int, float] | None = None  # (wall, busy ticks, own CPU seconds)

    def read(self) -> float | None:
        """Busy cores outside this process since the previous call (None on the first call or
        without /proc/stat)."""
        try:
            ticks = _busy_ticks(self.cores, self.stat.read_text())
        except OSError:
            return None
        own = sum(os.times()[:2])
        now = (time.monotonic(), ticks, own)
        before, self.last = self.last, now
        if before is None or now[0] - before[0] < 0.2:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        return max(0.0, ((now[1] - before[1]) / hz - (now[2] - before[2])) / (now[0] - before[0]))


# ---------------------------------------------------------------- the share
def share(cores: int, peers: int, busy_elsewhere: float | None) -> int:
    """Threads for one stage: its cores split among the dcganlab stages on them, and no more than
    the cores other programs leave idle (busy time rounded to whole cores), at least 1."""
    n = cores // (1 + peers)
    if busy_elsewhere is not None:
        n = min(n, math.floor(cores - busy_elsewhere + 0.5))
    return max(1, n)


@dataclass
class Share:
    stage: str
    cores: set[int]
    usable: int
    fixed: int = 0  # train.threads: > 0 fixes the count
    entry: Entry | None = None
    meter: BusyMeter | None = None
    threads: int = 0
    checked: float = 0.0  # when the registry and /proc/stat were last read (monotonic)

    def adjust(self, force: bool = False) -> int:
        """Re-read the registry and /proc/stat (every ADJUST_EVERY_S at most) and set torch's
        thread count to the share; returns it."""
        import torch

        if self.fixed:
            n = self.fixed
        elif force or time.monotonic() - self.checked >= ADJUST_EVERY_S:
            self.checked = time.monotonic()
            peers = running(registry_dir(), self.cores, self.entry.path if self.entry else None)
            n = share(self.usable, len(peers), self.meter.read() if self.meter else None)
        else:
            return self.threads
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.threads = n
        return n

    def fix(self, threads: int) -> None:
        """`train.threads`: > 0 that many threads whatever else runs (the stage stays registered,
        so that the others still leave it its share); 0 the share."""
        self.fixed = threads
        self.adjust(force=True)

    def release(self) -> None:
        if self.entry is not None:
            self.entry.close()
            self.entry = None


_current: Share | None = None


@contextlib.contextmanager
def claimed(stage: str):
    """While the block runs, this process is a registered `stage` and uses its share of the cores
    (nested claims reuse the outer one). Afterwards it leaves the registry and torch's thread
    count is what it was."""
    global _current
    if _current is not None:
        yield _current
        return
    import torch

    before, cores = torch.get_num_threads(), affinity()
    try:
        entry = Entry.register(registry_dir(), stage, cores)
    except OSError as err:  # an unwritable temp folder: share by /proc/stat alone
        print(f"warning: CPU share: cannot register in {registry_dir()} ({err.strerror})", file=sys.stderr)
        entry = None
    _current = Share(stage, cores, usable_cores(cores, quota_cores()), entry=entry, meter=BusyMeter(cores))
    _current.meter.read()  # busy time elsewhere is measured from here
    _current.adjust(force=True)
    try:
        yield _current
    finally:
        _current.release()
        _current = None
        torch.set_num_threads(before)


def current() -> Share | None:
    return _current


def fix(threads: int) -> None:
    """params' `train.threads` for the claimed stage, if any: > 0 fixes its thread count."""
    if _current is not None:
        _current.fix(threads)


def for_training(threads: int) -> None:
    """`train.threads` for a training in this process: > 0 fixes the count, 0 takes the share
    (or torch's default, outside a `dcganlab` command)."""
    if _current is not None:
        _current.fix(threads)
    elif threads:
        import torch

        torch.set_num_threads(threads)


def adjust() -> int:
    """The training loop's call: the current share's thread count (0 when no share was claimed)."""
    return _current.adjust() if _current is not None else 0

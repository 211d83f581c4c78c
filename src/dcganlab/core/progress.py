"""Progress that also shows where there is no terminal.

DVC runs every stage with its output piped, and tqdm switches itself off without a terminal:
an epoch over 54,000 images used to print nothing for minutes. So:

- in a terminal (stderr is a TTY, where tqdm draws): the usual tqdm bar;
- otherwise (DVC, CI, a log file): one plain line on stdout at most every
  $DCGANLAB_PROGRESS_SECONDS seconds (default 30), e.g.
  `train digits-dcgan epoch 3/20: step 120/140 (86%), 812 img/s, ETA 0:00:03 (all epochs 0:04:10)`.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def interval() -> float:
    """Seconds between two plain progress lines."""
    try:
        return max(0.0, float(os.environ.get("DCGANLAB_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _eta(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds))) if seconds == seconds and seconds < 1e8 else "?"


def _rate(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def status_line(
    desc: str, done: int, total: int | None, noun: str, rate: float, unit: str, after: int = 0, per_item: int = 1
) -> str:
    """`desc: noun done/total (pct%), rate unit/s, ETA h:mm:ss` (+ the ETA of `after` more items);
    without a known total: `desc: noun done, rate unit/s`."""
    if not total:
        return f"{desc}: {noun} {done}, {_rate(rate)} {unit}/s"
    line = f"{desc}: {noun} {done}/{total} ({100 * done / total:.0f}%), {_rate(rate)} {unit}/s"
    if rate > 0:
        line += f", ETA {_eta((total - done) * per_item / rate)}"
        if after:
            line += f" (all {_eta((total - done + after) * per_item / rate)})"
    return line


def progress(
    items: Iterable[T],
    desc: str,
    total: int | None = None,
    *,
    initial: int = 0,
    noun: str = "step",
    unit: str = "it",
    per_item: int = 1,
    after: int = 0,
    enabled: bool = True,
    leave: bool = False,
) -> Iterator[T]:
    """Iterate `items`, showing progress. `total` counts items (default len(items)) and `initial` those
    done before (a resumed epoch); each item is `per_item` `unit`s for the rate (e.g. a step = a batch
    of images); `after`: items still to come after these, for a second ETA (the remaining epochs)."""
    if not enabled:
        return iter(items)
    if total is None and hasattr(items, "__len__"):
        total = initial + len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        return iter(
            tqdm(items, desc=desc, total=total, initial=initial, leave=leave, unit=unit if per_item == 1 else "it")
        )
    return _lines(items, desc, total, initial, noun, unit, per_item, after)


def _lines(items, desc, total, initial, noun, unit, per_item, after) -> Iterator:
    every = interval()
    start = last = time.monotonic()
    done = initial
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every and now > start:
            last = now
            rate = (done - initial) * per_item / (now - start)
            print(status_line(desc, done, total, noun, rate, unit, after, per_item), flush=True)

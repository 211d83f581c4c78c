"""Progress without a terminal: DVC pipes every stage's output, so tqdm would print nothing."""

import re

import pytest

from dcganlab.core import progress as prog
from dcganlab.core.progress import progress, status_line


def test_status_line_names_the_stage_position_rate_and_eta():
    line = status_line("train x epoch 3/20", 120, 140, "step", 812.4, "img", after=140 * 17, per_item=32)
    assert line.startswith("train x epoch 3/20: step 120/140 (86%), 812 img/s, ETA 0:00:01 (all 0:01:35)")
    assert status_line("fetch", 7, None, "image", 3.5, "img") == "fetch: image 7, 3.5 img/s"


def test_without_a_terminal_a_line_at_most_every_interval(monkeypatch, capsys):
    clock = iter(range(0, 1000, 10))  # each item takes 10 s
    monkeypatch.setattr(prog.time, "monotonic", lambda: next(clock))
    monkeypatch.delenv("DCGANLAB_PROGRESS_SECONDS", raising=False)  # default: 30 s
    assert list(progress(range(10), "stage", noun="step", unit="img", per_item=4)) == list(range(10))
    lines = capsys.readouterr().out.splitlines()
    assert [re.search(r"step (\d+)/10", ln).group(1) for ln in lines] == ["3", "6", "9"]
    assert all("0.4 img/s" in ln and "ETA" in ln for ln in lines)  # 4 images per 10 s


def test_resumed_position_and_disabled(monkeypatch, capsys):
    monkeypatch.setenv("DCGANLAB_PROGRESS_SECONDS", "0")
    list(progress(range(5, 8), "train t epoch 2/2", 8, initial=5))
    assert capsys.readouterr().out.splitlines()[-1].startswith("train t epoch 2/2: step 8/8 (100%)")
    list(progress(range(3), "quiet", enabled=False))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("value", ["abc", "-5"])
def test_bad_interval_falls_back(monkeypatch, value):
    monkeypatch.setenv("DCGANLAB_PROGRESS_SECONDS", value)
    assert prog.interval() in (30.0, 0.0)


def test_training_and_extractor_print_progress_lines_under_a_pipe(prepared, monkeypatch, capsys):
    from dcganlab.core import paths
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.training.loop import train

    monkeypatch.setenv("DCGANLAB_PROGRESS_SECONDS", "0")
    data = load_processed(paths.processed_dir(prepared.root, "digits"))
    train_extractor(data, prepared.extractor, 0, prepared.root / "e.pt", "digits")
    train(prepared, "tiny")
    out = capsys.readouterr().out
    assert re.search(r"^extractor digits epoch 1/1: step \d+/\d+ \(\d+%\), [\d.]+ img/s, ETA", out, re.M)
    assert re.search(r"^train tiny epoch 1/1: step \d+/\d+ \(\d+%\), [\d.]+ img/s, ETA \d+:\d\d:\d\d", out, re.M)

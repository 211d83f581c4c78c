import pytest
from typer.testing import CliRunner

from dcganlab.cli import app

COMMANDS = ["fetch", "prepare", "faces", "extractor", "train", "sample", "evaluate", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_says_what_each_command_reads_and_writes(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "writes" in text.lower() or "write " in text.lower()


def test_variants_are_listed():
    result = CliRunner().invoke(app, ["variants"])
    assert result.exit_code == 0 and "dcgan" in result.output


def test_main_freezes_the_heap_on_its_way_out_whatever_the_exit(monkeypatch):
    """`main` ends with gc.freeze(): the interpreter's exit then skips walking torch's and
    MLflow's objects (1.3 s per process, docs/performance.md). Exit codes are unchanged."""
    import gc

    from dcganlab.cli import main

    for argv, code in ((["dcganlab", "--help"], 0), (["dcganlab", "no-such-command"], 2)):
        monkeypatch.setattr("sys.argv", argv)
        gc.unfreeze()
        try:
            with pytest.raises(SystemExit) as stop:
                main()
            assert stop.value.code == code
            assert gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()  # the test process goes on: give the objects back to the collector

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

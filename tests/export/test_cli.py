"""``tgir-export`` answers and reports unknown commands as usage errors."""

from tgir.export.cli import main


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "tgir-export" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err

"""The `kdet` command: help for every subcommand, one-line errors without tracebacks."""
import subprocess
import sys

import pytest

from kdet import cli


def _available():
    return list(cli._available())


def test_every_listed_subcommand_has_a_module():
    missing = [name for name in cli.COMMANDS if name not in cli._available()]
    # subcommands of issues not yet resolved are allowed to be absent, but never silently:
    # `kdet --help` lists exactly the available ones
    parser_help = cli.build_parser().format_help()
    for name in _available():
        assert name in parser_help
    for name in missing:
        assert f"    {name} " not in parser_help


@pytest.mark.parametrize("name", _available())
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    assert "usage: kdet " + name in capsys.readouterr().out


def test_unknown_arch_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "kdet.cli", "demo", "--archs", "regnetx_5gf"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = [l for l in proc.stderr.splitlines() if l.startswith("kdet demo: error:")]
    assert len(err) == 1 and "regnetx_400mf" in err[0] and "unknown backbone" in err[0]


def test_demo_table_runs(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--archs", "regnetx_400mf"]) == 0
    out = capsys.readouterr().out
    assert "| regnetx_400mf" in out and "yes" in out
    assert (tmp_path / "regnet_params_flops.md").exists()

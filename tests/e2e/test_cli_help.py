"""``parainfer COMMAND --help`` reads whole wherever it goes: piped (``| grep``, ``| cat``, a file)
with no ``$COLUMNS``, and on 80- and 120-column terminals (a real pseudo-terminal): every option
name appears in full, and option values are named as click names them (TEXT, INTEGER, FLOAT,
PATH), not ``<str>``."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
import typer

from parainfer import cli

COMMANDS = [["run"], ["serve"], ["train"], ["train-head"], ["export-onnx"], ["report"], ["simulate"],
            ["datasets", "fetch"]]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env() -> dict[str, str]:
    """The environment of a user's shell that sets no width: no COLUMNS, no forced terminal."""
    drop = {"COLUMNS", "LINES", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "NO_COLOR"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _option_names(words: list[str]) -> list[str]:
    """Every name of every option of ``parainfer WORDS``, from the command line's own definition."""
    command = typer.main.get_command(cli.app)
    for word in words:
        command = command.commands[word]
    return [name for param in command.params if param.param_type_name == "option"
            for name in (*param.opts, *param.secondary_opts)]


def _on_terminal(args: list[str], columns: int) -> str:
    """What ``parainfer ARGS`` prints on a terminal ``columns`` wide (colour codes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "parainfer.cli", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w))
def test_help_in_a_pipe_names_every_option_whole(words: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", *words, "--help"], capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    names = _option_names(words)
    assert names
    missing = [name for name in names if not re.search(rf"(^|[\s,/]){re.escape(name)}([\s,/=]|$)", out, re.M)]
    assert missing == [], out
    assert "…" not in out and "╭" not in out  # plain help: nothing cut short, no panels for grep to trip on
    assert not re.search(r"--[\w-]+ <\w+", out), out  # no `--workers <int>`
    assert not re.search(r"<(str|int|float)>", "\n".join(line for line in out.splitlines()
                                                        if line.lstrip().startswith("-"))), out


def test_run_help_names_values_as_click_does() -> None:
    out = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", "--help"], capture_output=True, text=True,
                         timeout=60, env=_env()).stdout
    for shown in ("-o, --output PATH", "--workers N|MIN:MAX|auto", "--task TEXT", "--max-batch-tokens INTEGER",
                  "--task-timeout FLOAT", "--report PATH", "--stop TEXT"):
        assert shown in out, out
    assert re.search(r"^\s+--overwrite / --no-overwrite\s", out, re.M)  # a flag takes no value


@pytest.mark.parametrize("columns", [80, 120])
def test_help_on_a_terminal_cuts_no_option_name(columns: int) -> None:
    """Narrower than ``cli.RICH_HELP_MIN_COLUMNS`` a terminal gets the plain help too (rich's
    panels would cut ``--threads-per-worker`` short at 80 columns); wider, rich's panels."""
    out = _on_terminal(["run", "--help"], columns)
    missing = [name for name in _option_names(["run"]) if name not in out]
    assert missing == [] and "…" not in out, out
    assert ("╭" in out) is (columns >= cli.RICH_HELP_MIN_COLUMNS)
    assert max(len(line) for line in out.splitlines()) <= columns

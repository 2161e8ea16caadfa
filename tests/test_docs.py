"""Every ```shell block of README.md and docs/*.md runs as written, on a fresh HOME in a temp folder.

Conventions the documents follow (so that an example can never fail as written):
- a block fenced ```shell holds commands that run on any machine with ofakit installed, in seconds; blocks that
  need something else (a GPU, a board, a data set, minutes of measuring, an install) are fenced ```text and the
  sentence before them says what they need;
- the blocks of one file run in order in one folder, so a later block may use files an earlier one wrote;
- one command per line; a line ending in ``\\`` continues on the next; ``# ...`` starts a comment; a line whose
  first word is ``ofakit`` and that uses no shell operator (``||``, ``|``, ``>``, ...) runs in-process through
  :func:`ofakit.cli.main` (globs expanded as a shell would), any other line runs in ``bash`` with the same
  environment. Every command must exit with 0.
"""
from __future__ import annotations

import glob
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ofakit.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<"}  # a line with one of these runs in bash
BLOCK = re.compile(r"^```shell[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def shell_commands(text: str) -> list[str]:
    """The commands of every ```shell block, in order (continuations joined, comments and blank lines dropped)."""
    out = []
    for block in BLOCK.findall(text):
        joined = re.sub(r"\\\n", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(line.strip())
    return out


def test_the_docs_have_runnable_examples():
    readme = shell_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert 1 <= len([c for c in readme if c.startswith("ofakit ")]) <= 8
    assert shell_commands("```shell\nofakit a \\\n  --b 1  # note\n\n# only a comment\n```\n") == ["ofakit a    --b 1  # note"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shell_block_runs(doc, tmp_path, monkeypatch, capsys):
    commands = shell_commands(doc.read_text(encoding="utf-8"))
    if not commands:
        pytest.skip(f"{doc.name} has no shell blocks")
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "OFAKIT_PROFILE_DIR", "OFAKIT_CACHE_DIR",
                "OFAKIT_INVENTORY", "OFAKIT_KNOWN_HOSTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(work)
    bindir = tmp_path / "bin"  # `ofakit` on PATH for the lines that run in bash
    bindir.mkdir()
    (bindir / "ofakit").write_text(f"#!/bin/sh\nexec {sys.executable} -m ofakit \"$@\"\n")
    (bindir / "ofakit").chmod(0o755)
    env_path = f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    for command in commands:
        words = shlex.split(command, comments=True)
        if words[0] == "ofakit" and not SHELL_OPERATORS & set(words):
            args = [m for w in words[1:] for m in (sorted(glob.glob(w)) if any(c in w for c in "*?[") else [w])]
            capsys.readouterr()
            code = main(args)
            out = capsys.readouterr()
            assert code == 0, f"{doc.name}: `{command}` exited with {code}:\n{out.err}{out.out}"
        else:
            done = subprocess.run(["bash", "-c", command], cwd=work, capture_output=True, text=True,
                                  env={"HOME": str(home), "PATH": env_path, "PYTHONPATH": str(ROOT)}, timeout=300)
            assert done.returncode == 0, f"{doc.name}: `{command}` exited with {done.returncode}:\n{done.stderr}"
    assert not list(ROOT.joinpath("device_profiles").glob("note10-copy"))  # nothing written into the package

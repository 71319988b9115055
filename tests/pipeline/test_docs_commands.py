"""The commands the docs tell users to type exist: every ``python -m`` module, every ``winnow``
subcommand and each of its ``--options`` (README, docs/, BENCHMARKS.md, the Makefile)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
import pytest

from winnow.pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_snippets(doc: Path) -> list[str]:
    """Fenced code blocks (the Makefile whole) and inline code that starts ``winnow <command> --``,
    as lines with backslash continuations joined; prose that merely names winnow is skipped."""
    text = doc.read_text(encoding="utf-8")
    blocks = [text] if doc.name == "Makefile" else re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    blocks += re.findall(r"`(winnow [a-z]+ --[^`]*)`", text)
    return [line.strip() for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]


def _winnow_calls() -> list[tuple[str, str, list[str]]]:
    calls = []
    for doc in DOCS:
        for line in _shell_snippets(doc):
            for m in re.finditer(r"(?:^|\$ |bin/)winnow ([a-z]+)((?:(?!&&)[^#|;])*)", line):
                calls.append((doc.name, m.group(1), re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(2))))
    return calls


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_m_modules_exist(doc: Path):
    for module in re.findall(r"python3? -m ([A-Za-z_][\w.]*)", doc.read_text(encoding="utf-8")):
        if module.split(".")[0] not in {"benchmarks", "winnow"}:
            continue  # pip, build, ...: not ours
        assert importlib.util.find_spec(module) is not None, f"{doc.name}: python -m {module} does not exist"


def test_winnow_subcommands_and_options_exist():
    calls = _winnow_calls()
    assert len(calls) > 20  # the pattern still finds the docs' commands
    for doc, name, options in calls:
        assert name in main.commands, f"{doc}: `winnow {name}` is not a command"
        command = main.commands[name]
        known = {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
        known |= {"--help"}
        for option in options:
            assert option in known, f"{doc}: `winnow {name}` has no option {option}"

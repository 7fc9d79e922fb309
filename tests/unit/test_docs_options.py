"""``callbridge COMMAND --help`` and the pages name the same options, for the commands a user runs from the docs:
``call``, ``emulator``, ``users``, ``scripts`` and each ``bench``.

Both ways: every option a page writes after the command (in a code span or a code line that starts with it) is
one of the command's, and every option of the command (but those hidden from its help) is named in a section of
the pages that names the command. Each command's parser is the one its own ``--help`` prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from bridge.cli import main

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "call_scripts" / "README.md",
    REPO / "deploy" / "README.md",
]
COMMANDS = {
    "call": ["call"],
    "emulator": ["emulator"],
    "users": ["users"],
    "scripts check": ["scripts", "check"],
    "scripts from-recording": ["scripts", "from-recording"],
    **{f"bench {b}": ["bench", b] for b in ("audio", "calls", "replay", "echo", "recording", "soak", "network")},
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def parser_options(argv: list[str]) -> tuple[set[str], set[str]]:
    """(the options ``callbridge ARGV --help`` shows, those it hides) of the parser that prints that help."""
    printed: list[argparse.ArgumentParser] = []

    def record(self: argparse.ArgumentParser, file: object = None) -> None:
        printed.append(self)

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.setattr(argparse.ArgumentParser, "print_help", record)
        with contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    assert printed, f"callbridge {' '.join(argv)} --help printed no parser's help"
    shown: set[str] = set()
    hidden: set[str] = set()
    for action in printed[-1]._actions:
        names = {o for o in action.option_strings if o.startswith("--")} - {"--help"}
        (hidden if action.help == argparse.SUPPRESS else shown).update(names)
    return shown, hidden


def sections() -> list[str]:
    """The pages cut at their headings."""
    out: list[str] = []
    for page in PAGES:
        current: list[str] = []
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") and current:
                out.append("\n".join(current))
                current = []
            current.append(line)
        out.append("\n".join(current))
    return out


def _names(command: str) -> re.Pattern[str]:
    """``callbridge call``, ``bench calls`` (also ``callbridge bench calls``), ``callbridge scripts check``."""
    head = "bench" if command.startswith("bench ") else "callbridge"
    words = command.removeprefix("bench ") if head == "bench" else command
    return re.compile(rf"(?<![\w-]){head} {re.escape(words)}(?![\w-])")


def written_after(command: str) -> set[str]:
    """Options the pages write after ``command`` on the same code span or code line."""
    name = _names(command)
    found: set[str] = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        pieces = CODE_SPAN.findall(text)
        in_code, pending = False, ""
        for line in text.splitlines():
            if line.startswith("```"):
                in_code = not in_code
            elif in_code:
                code = pending + line.split(" #", 1)[0].strip()
                pending = code[:-1] + " " if code.endswith("\\") else ""  # a continued line joins the next
                if not pending:
                    pieces.append(code)
        for piece in pieces:
            for match in name.finditer(piece):
                rest = piece[match.end() :]
                stop = re.search(r"\||&&|;|\bcallbridge\b", rest)  # the next command starts there
                found.update(OPTION.findall(rest[: stop.start()] if stop else rest))
    return found


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_pages_name_only_options_the_command_has(command: str) -> None:
    shown, hidden = parser_options(COMMANDS[command])
    unknown = written_after(command) - shown - hidden - {"--help"}
    assert not unknown, f"the pages write {sorted(unknown)} after `{command}`, which `--help` does not know"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_of_the_command_is_in_the_pages(command: str) -> None:
    shown, _ = parser_options(COMMANDS[command])
    name = _names(command)
    about = "\n".join(s for s in sections() if name.search(s))
    assert about, f"no section of the pages names `{command}`"
    missing = shown - set(OPTION.findall(about))
    assert not missing, f"`{command} --help` has {sorted(missing)}, which no section about it names"


def test_a_misspelt_option_is_caught() -> None:
    shown, _ = parser_options(["call"])
    assert "--play" in shown and "--hangup-after" in shown and "--plya" not in shown
    assert "--plya" not in written_after("call")  # the check above is against real words of the pages
    assert {"--play", "--record", "--hangup-after"} <= written_after("call")

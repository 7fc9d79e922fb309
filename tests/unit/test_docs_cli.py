"""Every ``callbridge …`` command the pages show a reader parses against the CLI as it is: the subcommand exists, and
its own parser accepts the flags and arguments written after it.

Where: README.md, docs/*.md, call_scripts/README.md and deploy/README.md; in each, the code spans outside fences (in
prose and tables) whose command word is ``callbridge`` or a path to it (``.venv/bin/callbridge``) or that start with a
subcommand followed by a flag or one of its actions (``rollout set --weights``, ``bench calls``), and every such
command of the ``sh`` blocks (those run by tests/integration/docs/test_docs_commands.py and those marked no-doctest
alike), after ``VAR=value`` prefixes, in a pipeline, after ``&&`` or in ``$(…)``. A command ends where the shell ends
it (``|``, ``&&``, ``;``, a redirection, a ``#`` comment). Also what an operator reads or runs from deploy/: the code
spans of the alerts' texts (deploy/prometheus/alerts.yml) and the ``Exec…=`` lines of the systemd units.

How: the subcommand's function of ``bridge.cli.COMMANDS`` is called with the words; its first ``parse_args`` is
stopped before anything runs (every subcommand parses before it acts), and that parser, the one the command really
uses, parses the words. Nothing is run, no process is started.

Placeholders, as the pages write a synopsis:

- a word in capitals (``NAME``, ``DIR``, ``URL``, ``N``, ``HOST:PORT``, ``DIGITS@SECONDS``, ``PATHS...``,
  ``VARIANT=W,...``), a word in angle brackets (``<id>``) or a shell variable (``$CI_PASSWORD``) stands for a value:
  it fills its place (``--out DIR`` gives ``--out`` its value) but its type and choices are not checked;
- ``...`` or ``…`` alone stands for whatever the page leaves out: it fills a value's place (``--reason ...``), is
  no argument of its own where none is taken, and arguments left missing are not counted where it is written;
- brackets around the optional parts of a synopsis are dropped and their contents checked (``[--watch [--interval
  S]]``), unless they describe in words what goes there (``[the flags of serve]``: as ``...``); ``a|b`` (``\\|`` in a
  table) is a choice, each alternative checked;
- a placeholder in place of the subcommand (``callbridge COMMAND --help``) or of a sub-action (``callbridge bench
  NAME``) names every one: the words after it are not checked;
- a code span in prose may name a command without its operands (``callbridge scripts from-recording``): arguments
  left missing are fine there, not in a ``sh`` block, whose lines are commands as written.

A flag is written in full: argparse would take ``--dialect`` for ``--dialects``, a page must not. A failure names the
page, the line and why: an unknown subcommand, an unknown flag or argument, a flag without its value, a value
refused, or (in a ``sh`` block) a required argument missing.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "call_scripts" / "README.md",
    REPO / "deploy" / "README.md",
]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"  # the summaries an operator reads in an incident
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
EXEC = re.compile(r"^Exec\w*=[-@:+!]*(?P<line>.*)$")
FENCE = re.compile(r"^\s*```(?P<lang>\S*)")
CODE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
ANGLED = re.compile(r"<[A-Za-z_.][^<>\n]*>")
CAPITALS = re.compile(r"^[A-Z][A-Z0-9_]*(?:[:@/.,=+-]+[A-Z0-9_]+)*(?:,?(?:\.\.\.|…))?$")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
MORE = {"...", "…"}
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_WORDS = {"exec", "time", "nohup", "env", "sudo"}
HERE = "PLACEHOLDER"


@dataclass(frozen=True)
class Command:
    page: Path
    line: int  # 1-based
    words: list[str]  # the words after `callbridge`
    in_block: bool  # a line of a sh block (a command as written) or a code span (may name a command only)
    prefixed: bool = True  # written with `callbridge` (or a path to it) or without (`rollout set --weights ...`)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def text(self) -> str:
        return " ".join(["callbridge", *self.words] if self.prefixed else self.words)


def is_placeholder(word: str) -> bool:
    value = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
    return value in MORE or value == HERE or value.startswith("$") or bool(CAPITALS.match(value))


def _synopsis(text: str) -> str:
    """``text`` with its synopsis marks resolved: ``<id>`` one placeholder word, ``[--json]`` its contents,
    ``[the flags of serve]`` (words, no flag) ``...``, ``\\|`` (a table's) ``|``."""
    text = ANGLED.sub(HERE, text.replace("\\|", "|"))
    while (inner := re.sub(r"\[([^\[\]]*)\]", _bracketed, text)) != text:
        text = inner
    return text


def _bracketed(group: re.Match[str]) -> str:
    inside = group[1].strip()
    described = not inside.startswith("-") and not all(is_placeholder(w) for w in inside.split())
    return " ... " if described else f" {inside} "


def _segments(text: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, as words (a ``$(…)`` is one of them, and a word of its own)."""
    text = _synopsis(text)
    for inner in SUBSTITUTION.findall(text):
        yield from _segments(inner)
    text = SUBSTITUTION.sub("$SUBSTITUTION", text)
    text = re.sub(r"(?<![\w-])\d?>>?&?\d*", " > ", text)  # 2>&1, >out, 2>> log: a redirection, not a word
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unclosed quote in a span: words as written
        tokens = text.split()
    words: list[str] = []
    for token in tokens:
        if token and set(token) <= set("|&;()<>"):
            yield words
            words = []
        else:
            words.append(token)
    yield words


def _after_callbridge(words: list[str]) -> list[str] | None:
    """The words after the command word ``callbridge`` (or a path to it), past ``VAR=value``, ``sudo -u USER`` and
    the like; None if the command is another's."""
    i, sudo = 0, False
    while i < len(words) and (ENV.match(words[i]) or words[i] in SHELL_WORDS or (sudo and words[i].startswith("-"))):
        sudo = sudo or words[i] == "sudo"
        i += 2 if sudo and words[i] in {"-u", "-g"} else 1
    if i < len(words) and (words[i] == "callbridge" or words[i].endswith("/callbridge")):
        return words[i + 1 :]
    return None


def commands(page: Path) -> Iterator[Command]:
    lines = page.read_text(encoding="utf-8").splitlines()
    fence: str | None = None
    pending, pending_line = "", 0
    prose: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        opened = FENCE.match(line)
        if opened is not None:
            fence = None if fence is not None else opened["lang"]
            continue
        if fence is None:
            prose.append((number, line))
        elif fence == "sh":
            joined = pending + line.strip()
            pending_line = pending_line or number
            if joined.endswith("\\"):
                pending = joined[:-1] + " "
                continue
            for segment in _segments(joined):
                if (words := _after_callbridge(segment)) is not None:
                    yield Command(page, pending_line, words, True)
            pending, pending_line = "", 0
    yield from _spans(page, prose)


def _spans(page: Path, prose: list[tuple[int, str]]) -> Iterator[Command]:
    """The code spans of the prose that start with the command (a span may wrap onto the next line)."""
    text = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose:
        starts.append(starts[-1] + len(line) + 1)
    for span in CODE_SPAN.finditer(text):
        for segment in _segments(span[1].replace("\n", " ")):
            index = next(i for i, start in enumerate(starts) if start > span.start()) - 1
            if (words := _after_callbridge(segment)) is not None:
                yield Command(page, prose[index][0], words, False)
            elif _short(segment):
                yield Command(page, prose[index][0], segment, False, prefixed=False)


def _short(words: list[str]) -> bool:
    """A command written without ``callbridge``: a subcommand followed by a flag or one of its actions (``rollout
    set --weights``, ``bench calls``, ``serve --http-port H``), not a log line that starts with a command's name."""
    if len(words) < 2 or words[0] not in COMMANDS:
        return False
    return words[1].startswith("--") or words[1] in _actions(words[0])


@functools.cache
def _actions(name: str) -> frozenset[str]:
    """The actions a subcommand takes first (``rollout``: show, set, ...; ``users``: add, ..., unlock)."""
    module, function, _ = COMMANDS[name]
    parser, _ = _subcommand_parser(getattr(importlib.import_module(module), function), [])
    found = {"unlock"} if name == "users" else set()  # users gives `unlock` to a parser of its own
    for action in parser._actions:  # argparse lists them nowhere public
        if not action.option_strings and action.choices is not None:
            found.update(action.choices)
    return frozenset(found)


def deploy_commands() -> Iterator[Command]:
    """The code spans of the alerts' texts (a template's ``{{ … }}`` is a placeholder) and the units' ``Exec…=``
    lines (commands as written)."""
    text = TEMPLATE.sub(HERE, ALERTS.read_text(encoding="utf-8"))
    yield from _spans(ALERTS, list(enumerate(text.splitlines(), start=1)))
    for unit in UNITS:
        for number, line in enumerate(unit.read_text(encoding="utf-8").splitlines(), start=1):
            if (found := EXEC.match(line)) is not None:
                for segment in _segments(found["line"]):
                    if (words := _after_callbridge(segment)) is not None:
                        yield Command(unit, number, words, True)


# -- the real parser of a subcommand, stopped before it runs ---------------------------------------------------------


class _Parsed(BaseException):  # past a command's own `except Exception`: nothing after its parse may run
    def __init__(self, parser: argparse.ArgumentParser, argv: list[str]) -> None:
        self.parser, self.argv = parser, argv


class _Refused(Exception):
    pass


def _subcommand_parser(
    function: Callable[[list[str]], Any], words: list[str]
) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser ``function`` parses ``words`` with, and the words it gives it (a dispatcher, as ``bench`` and
    ``users unlock`` are, gives the rest to a parser of its own)."""

    def stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Parsed(self, list(words if args is None else args))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", stop)
        try:
            function(list(words))
        except _Parsed as parsed:
            return parsed.parser, parsed.argv
    raise AssertionError(f"{function.__qualname__} returned without parsing its arguments")


def _alternatives(words: list[str]) -> list[list[str]]:
    """One command line per choice of a synopsis's ``a|b|c`` words."""
    variants: list[list[str]] = [[]]
    for word in words:
        choices = word.split("|") if "|" in word.strip("|") else [word]
        variants = [[*v, c] for v in variants for c in choices]
    return variants


def problem(command: Command) -> str | None:
    """Why ``command`` is not one the CLI accepts, or None."""
    words = command.words
    if not words or words[0].startswith("-"):  # `callbridge`, `callbridge --version`: the top level
        return None if set(words) <= {"--version", "-V", "--help", "-h"} else f"not a top-level flag: {words}"
    if is_placeholder(words[0]):
        return None
    if words[0] not in COMMANDS:
        return f"unknown subcommand {words[0]!r}"
    module, name, _ = COMMANDS[words[0]]
    function = getattr(importlib.import_module(module), name)
    missing_ok = not command.in_block or bool(MORE & set(words))
    for variant in _alternatives(words[1:]):
        parser, argv = _subcommand_parser(function, variant)
        if {"-h", "--help"} & set(argv):
            continue
        if (why := _refusal(parser, argv, missing_ok=missing_ok)) is not None:
            return why
    return None


def _refusal(parser: argparse.ArgumentParser, argv: list[str], *, missing_ok: bool) -> str | None:
    real_get_value = argparse.ArgumentParser._get_value  # argparse's one hook for a value's type
    real_check_value = argparse.ArgumentParser._check_value  # and for its choices

    def get_value(self: argparse.ArgumentParser, action: argparse.Action, arg: str) -> Any:
        return arg if is_placeholder(arg) else real_get_value(self, action, arg)

    def check_value(self: argparse.ArgumentParser, action: argparse.Action, value: Any) -> None:
        if not (isinstance(value, str) and is_placeholder(value)):
            real_check_value(self, action, value)

    def error(self: argparse.ArgumentParser, message: str) -> Any:
        raise _Refused(f"{self.prog}: {message}")

    with pytest.MonkeyPatch.context() as patch:
        for each in _parsers(parser):  # a flag is written in full: argparse takes a prefix, the pages must not
            patch.setattr(each, "allow_abbrev", False)
        patch.setattr(argparse.ArgumentParser, "_get_value", get_value)
        patch.setattr(argparse.ArgumentParser, "_check_value", check_value)
        patch.setattr(argparse.ArgumentParser, "error", error)
        try:
            _, extra = parser.parse_known_args(argv)
        except _Refused as refused:
            message = str(refused)
            if (sub := re.search(r"unknown parser '([^']*)'", message)) and is_placeholder(sub[1]):
                return None  # `callbridge bench NAME`: every bench
            if missing_ok and "the following arguments are required" in message:
                return _unknown_flags(parser, argv)  # argparse stops at what is missing: its flags still count
            return _why(message)
    if extra := [w for w in extra if w not in MORE]:
        return f"unknown flag or argument ({parser.prog}: unrecognized arguments: {' '.join(extra)})"
    return None


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and its sub-actions' parsers."""
    yield parser
    for action in parser._actions:  # argparse lists them nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every flag of ``parser`` and of its sub-actions' parsers."""
    return {flag for each in _parsers(parser) for action in each._actions for flag in action.option_strings}


def _unknown_flags(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    known = _option_strings(parser)
    unknown = [w for w in argv if w.startswith("-") and w != "-" and w.split("=", 1)[0] not in known]
    return f"unknown flag ({parser.prog}: {' '.join(unknown)})" if unknown else None


def _why(message: str) -> str:
    if "invalid choice" in message:
        return f"unknown subcommand or refused choice ({message})"
    if "unrecognized arguments" in message:
        return f"unknown flag or argument ({message})"
    if "expected one argument" in message or "expected at least one argument" in message:
        return f"a flag without its value ({message})"
    if "the following arguments are required" in message:
        return f"a required argument missing ({message})"
    return message


COMMAND_LINES = [*(c for page in PAGES for c in commands(page)), *deploy_commands()]


def test_the_pages_show_commands_in_spans_and_blocks() -> None:
    assert len([c for c in COMMAND_LINES if not c.in_block]) > 150
    assert len([c for c in COMMAND_LINES if c.in_block]) > 30
    assert {c.words[0] for c in COMMAND_LINES if c.words} >= {"serve", "replay", "rollout", "users", "bench"}
    pages = {str(c.page.relative_to(REPO)) for c in COMMAND_LINES}
    assert pages >= {"README.md", "docs/operating.md", "call_scripts/README.md", "deploy/README.md"}, pages
    assert pages >= {"deploy/prometheus/alerts.yml", "deploy/systemd/callbridge.service"}, pages


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_gives_its_words_to_a_parser(name: str) -> None:
    """The stop works for each subcommand (a new one included): its words reach a parser, and a flag it lacks is
    named."""
    module, function, _ = COMMANDS[name]
    run = getattr(importlib.import_module(module), function)
    sub = {"bench": ["audio"], "users": ["unlock"]}.get(name, [])
    parser, argv = _subcommand_parser(run, [*sub, "--nonesuch"])
    assert "--nonesuch" in argv and parser.prog.startswith(f"callbridge {name}"), (parser.prog, argv)
    why = problem(Command(REPO / "README.md", 1, [name, *sub, "--nonesuch"], False))
    assert why is not None and "--nonesuch" in why, why


def test_every_command_on_the_pages_parses() -> None:
    wrong = [f"{c.where}: `{c.text}`: {why}" for c in COMMAND_LINES if (why := problem(c)) is not None]
    assert not wrong, f"{len(wrong)} command(s) the CLI refuses:\n" + "\n".join(wrong)


PAGE = """\
Prose: `callbridge replay call_scripts --dialects ga`, `callbridge scripts from-recording` (a name),
`callbridge rollout set DIALPLAN --weights ... --reason TEXT`, `callbridge calls [--watch [--interval S]] [--json]`,
`callbridge health [the flags of serve] [--json]`, `callbridge users add NAME --role viewer\\|admin`,
`callbridge bench NAME`, `callbridge COMMAND --help`, `.venv/bin/callbridge demo --json` and `callbridge`.

| a table | `callbridge replay call_scripts --nonesuch` |
| `callbridge rollout --nonesuch` | `callbridge replay call_scripts --report` |
`callbridge frobnicate --now`, `callbridge users add NAME --role owner`, `callbridge bench nonesuch`,
`callbridge replay call_scripts --budget`, `callbridge replay call_scripts --dialect ga`.
Without the name: `rollout set --weights A=1 --reason x`, `bench calls --steps 8`, `rollout set --nonesuch`, `call
ended by WHO` (a log line) and `serve --workers` (no value).

```sh
CI=1 callbridge scripts check call_scripts --json | jq .ok   # a pipeline
printf x | callbridge users add ci-bot --role viewer --password-stdin && callbridge rollout show 2>&1
echo "$(callbridge users token ci-bot)"
callbridge scripts from-recording \\
    recordings/CALL
```

```yaml
command: callbridge nonesuch
```
"""


def test_the_rules_find_each_kind_of_mistake_where_it_is(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    found = {(c.line, c.text): problem(c) for c in commands(page)}
    wrong = {key: why for key, why in found.items() if why is not None}
    assert len(found) == 27, "\n".join(f"{k}: {v}" for k, v in found.items())
    assert {(line, text.split()[1] if " " in text else "") for line, text in wrong} == {
        (6, "replay"), (7, "rollout"), (7, "replay"), (8, "frobnicate"), (8, "users"), (8, "bench"), (9, "replay"),
        (10, "set"), (11, "--workers"), (17, "scripts"),
    }  # fmt: skip
    why = {text: reason for (_, text), reason in wrong.items()}
    assert why["callbridge replay call_scripts --nonesuch"].startswith("unknown flag or argument"), why
    assert why["callbridge rollout --nonesuch"].startswith("unknown flag"), why
    assert why["callbridge replay call_scripts --report"].startswith("a flag without its value"), why
    assert why["callbridge replay call_scripts --dialect ga"].startswith("unknown flag or argument"), why  # in full
    assert why["rollout set --nonesuch"].startswith("unknown flag"), why
    assert why["serve --workers"].startswith("a flag without its value"), why
    assert why["callbridge frobnicate --now"] == "unknown subcommand 'frobnicate'", why
    assert "invalid choice: 'owner'" in why["callbridge users add NAME --role owner"], why
    assert why["callbridge bench nonesuch"].startswith("unknown subcommand or refused choice"), why
    assert why["callbridge scripts from-recording recordings/CALL"].startswith("a required argument missing"), why

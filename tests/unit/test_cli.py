"""The CLI behaves: ``--version``, ``--help`` on every command and subcommand (exit 0, a line for every flag), and one
set of exit codes (0 success, 1 the work failed, 2 a usage or configuration error) for every command."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import cli


@contextlib.contextmanager
def _recording_parsers() -> Iterator[list[argparse.ArgumentParser]]:
    """Every parser that prints its help while inside."""
    seen: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.print_help

    def record(self: argparse.ArgumentParser, file: object = None) -> None:
        seen.append(self)
        original(self, file)  # type: ignore[arg-type]  # the signature's own default

    argparse.ArgumentParser.print_help = record  # type: ignore[method-assign]  # restored below
    try:
        yield seen
    finally:
        argparse.ArgumentParser.print_help = original  # type: ignore[method-assign]  # restored


def _help(path: list[str]) -> tuple[int, str, argparse.ArgumentParser | None]:
    out = io.StringIO()
    with _recording_parsers() as seen, contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = cli.main([*path, "--help"])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), (seen[-1] if seen else None)


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices
    ]


def test_version_and_the_command_list() -> None:
    code, out, _ = _help([])
    assert code == 0
    for name, (_, _, help_) in cli.COMMANDS.items():
        assert f"  {name} " in out and help_ in out
        assert help_.strip() not in {"beta/GA", "beta and GA"}
    version = io.StringIO()
    with contextlib.redirect_stdout(version):
        assert cli.main(["--version"]) == 0
    assert version.getvalue().startswith("callbridge ")


# every command that prints a result (not the services: serve, emulator, tokens)
PRINTS_A_RESULT = {
    "demo", "call", "phone listen", "dialplan check", "replay", "scripts check", "scripts from-recording",
    "rollout show", "rollout set", "calls", "drain", "bench audio", "bench calls", "bench replay", "bench soak",
    "bench echo", "bench recording",
    "config show", "health", "users",
}  # fmt: skip


def test_every_command_and_subcommand_has_help_for_every_flag() -> None:
    walked: list[str] = []
    todo = [[name] for name in cli.COMMANDS]
    while todo:
        path = todo.pop()
        code, out, parser = _help(path)
        where = " ".join(path)
        assert code == 0, f"callbridge {where} --help exited {code}"
        assert parser is not None, f"callbridge {where} --help printed no parser's help"
        assert len(path) > 1 or parser.description, f"callbridge {where}: no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # a line per subcommand in the parent's help
                for choice in action._choices_actions:
                    assert choice.help and choice.dest in out, f"callbridge {where}: {choice.dest} has no help"
                continue
            if action.help == argparse.SUPPRESS:
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help, f"callbridge {where}: {label} has no help text"
            for option in action.option_strings:
                assert option in out, f"callbridge {where} --help does not list {option}"
        todo += [[*path, sub] for sub in _subcommands(parser)]
        walked.append(where)
        if where in PRINTS_A_RESULT:
            assert "--json" in out, f"callbridge {where} has no --json"
    assert PRINTS_A_RESULT | {"serve", "emulator", "tokens"} <= set(walked)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_usage_and_configuration_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./dialplans here
    for var in ("REDIS_URL", "CALLBRIDGE_DIALPLANS"):
        monkeypatch.delenv(var, raising=False)
    assert _run(["no-such-command"], capsys)[0] == 2
    assert _run(["serve", "--no-such-flag"], capsys)[0] == 2
    for argv in (["serve"], ["serve", "--dialplans", str(tmp_path / "missing")]):
        code, err = _run(argv, capsys)
        assert code == 2, err
        assert "dialplans" in err and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text("name: bad\nmatch: ['1']\nanswer_timeout_s: -1\n")
    code, err = _run(["dialplan", "check", str(tmp_path / "bad.yaml")], capsys)
    assert code == 2 and "answer_timeout_s" in err
    code, err = _run(["calls"], capsys)
    assert code == 2 and "REDIS_URL" in err
    code, err = _run(["rollout", "set", "support", "--weights", "a=1"], capsys)
    assert code == 2 and "--reason" in err


def test_a_failure_of_the_work_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.devkit.ports import free_port

    code, err = _run(["calls", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"], capsys)  # nobody listens
    assert code == 1, err

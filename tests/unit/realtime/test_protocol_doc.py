"""docs/protocol.md's generated section (the event map and the capability table) is what the dialect tables say."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import pytest

from bridge.realtime.dialects import BETA, DIALECTS, GA
from bridge.realtime.dialects.__main__ import main
from bridge.realtime.dialects.eventmap import BEGIN, CONCEPTS, END, refresh, render

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"  # the checkout's (also with a wheel installed)


def test_the_document_is_current() -> None:
    text = DOCUMENT.read_text()
    assert refresh(text, tuple(DIALECTS.values())) == text, "stale: run python -m bridge.realtime.dialects"
    assert main(["--check", str(DOCUMENT)]) == 0


def test_a_changed_table_makes_the_document_stale(tmp_path: Path) -> None:
    copy = tmp_path / "protocol.md"
    copy.write_text(DOCUMENT.read_text())
    renamed = {**GA.own_server_events, "response.output_audio.delta": "text.delta"}
    ga = dataclasses.replace(GA, own_server_events=MappingProxyType(renamed))
    assert refresh(copy.read_text(), (BETA, ga)) != copy.read_text()
    copy.write_text(copy.read_text().replace("`response.output_audio.delta`", "`response.audio.delta`"))
    assert main(["--check", str(copy)]) == 1
    assert main([str(copy)]) == 0 and main(["--check", str(copy)]) == 0  # rewritten from the tables
    assert copy.read_text() == DOCUMENT.read_text()


# Events the bridge decodes but surfaces nowhere (it ignores them): the map leaves them out.
NOT_MAPPED = frozenset(
    {
        "item.retrieved", "response.item_done", "response.part_added", "response.part_done", "mcp",
        "input.transcript_segment", "output_buffer.started", "output_buffer.stopped", "output_buffer.cleared",
        "transcription_session.updated",
    }
)  # fmt: skip


def test_every_concept_names_each_dialects_wire() -> None:
    section = render((BETA, GA))
    assert section.startswith(BEGIN) and section.endswith(END)
    for concept in CONCEPTS:
        assert f"| {concept.name} |" in section
    for dialect in (BETA, GA):
        for wire, canonical in dialect.server_events.items():
            assert canonical in NOT_MAPPED or f"`{wire}`" in section, (dialect, wire)
    assert "`OpenAI-Beta: realtime=v1`" in section and "`POST /realtime/client_secrets`" in section


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no generated section"):
        refresh("# nothing here\n", (BETA, GA))

"""The worker's memory policy: start-up objects frozen, a call's reference cycles freed right after it ends."""

from __future__ import annotations

import asyncio
import gc
import weakref

from bridge.runtime.memory import CycleCollector


class _Node:
    def __init__(self) -> None:
        self.buffer = bytearray(256 * 1024)  # what a closed connection's cycle keeps alive
        self.me: _Node | None = self


def test_cycles_of_an_ended_call_are_freed_shortly_after_it_ends() -> None:
    pauses: list[float] = []

    async def scenario() -> tuple[bool, bool, int]:
        collector = CycleCollector(delay_s=0.05, observe=pauses.append)
        gc.disable()  # only the collector may free the cycle in this test
        try:
            node = _Node()
            alive = weakref.ref(node)
            del node
            assert alive() is not None  # a cycle: reference counting alone does not free it
            collector.call_ended()
            collector.call_ended()  # two calls ending together share one collection
            still_there = alive() is not None
            await asyncio.sleep(0.2)
            return still_there, alive() is None, collector.collections
        finally:
            gc.enable()

    before, freed, collections = asyncio.run(scenario())
    assert before and freed
    assert collections == 1 and len(pauses) == 1 and pauses[0] >= 0  # its length is the machine's load, not checked


def test_freeze_hides_start_up_objects_from_collections_and_thaw_restores_them() -> None:
    collector = CycleCollector()
    try:
        frozen = collector.freeze_startup()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
        node = _Node()
        alive = weakref.ref(node)
        del node
        assert collector.collect() >= 1 and alive() is None  # new cycles are still collected
    finally:
        collector.thaw()
    assert gc.get_freeze_count() == 0

"""A Realtime session's conversation: its items in order, what the client may do to them (create, truncate,
delete, retrieve), and how much of each assistant item's audio went out (what a truncate may cut back to)."""

from __future__ import annotations

from typing import Any

from bridge.emulator.config import DialectConfig
from bridge.emulator.core import SessionCore
from bridge.emulator.record import SessionRecord
from bridge.emulator.wire import Id, Wire
from bridge.realtime.dialects.schema import ClientError


class Conversation:
    def __init__(self, core: SessionCore, wire: Wire, cfg: DialectConfig, record: SessionRecord) -> None:
        self.core, self.wire, self.cfg, self.record = core, wire, cfg, record  # core: the session's plumbing
        self.order: list[str] = []
        self.items: dict[str, dict[str, Any]] = {}
        self.audio_ms: dict[str, float] = {}  # assistant item -> audio ms delivered in deltas

    def find(self, item_id: str, param: str) -> dict[str, Any]:
        item = self.items.get(item_id)
        if item is None:
            raise ClientError("item_not_found", f"Conversation item with id '{item_id}' not found.", param)
        return item

    def insert(self, item: dict[str, Any], previous: str | None = None) -> str | None:
        """Add ``item`` after ``previous`` (default: at the end); returns the id it follows."""
        if previous == "root":
            index = 0
        elif previous is not None:
            index = self.order.index(previous) + 1
        else:
            index = len(self.order)
        self.order.insert(index, item["id"])
        self.items[item["id"]] = item
        return self.order[index - 1] if index > 0 else None

    def announce(self, item: dict[str, Any], previous: str | None, t: float) -> None:
        """beta conversation.item.created; GA conversation.item.added then conversation.item.done."""
        self.core.send(self.wire.event("item.added", previous_item_id=previous, item=self.wire.item(item)), t)
        if self.wire.shape.item_done_event:
            self.core.send(self.wire.event("item.done", previous_item_id=previous, item=self.wire.item(item)), t)

    def lines(self) -> list[tuple[str, str]]:
        """The conversation's words in order: (role, text) of each user and assistant message that has any (a
        caller's turn not transcribed for the client: what the emulator heard in it)."""
        heard = {t["item_id"]: t["text"] for t in self.record.transcripts}
        out: list[tuple[str, str]] = []
        for item_id in self.order:
            item = self.items[item_id]
            if item.get("type") != "message" or item.get("role") not in ("user", "assistant"):
                continue
            text = " ".join(c.get("transcript") or c.get("text") or "" for c in item.get("content") or ()).strip()
            text = text or (heard.get(item_id, "") if item["role"] == "user" else "")
            if text:
                out.append((str(item["role"]), text))
        return out

    def last(self) -> str | None:
        return self.order[-1] if self.order else None

    def before(self, item_id: str) -> str | None:
        """The id of the item before ``item_id`` (None at the start, or when it is not in the conversation)."""
        index = self.order.index(item_id) if item_id in self.order else 0
        return self.order[index - 1] if index > 0 else None

    def update(self, item: dict[str, Any]) -> None:
        """A response's item, as it now is, if it is in the conversation."""
        if item["id"] in self.items:
            self.items[item["id"]] = item

    def create(self, ev: dict[str, Any], t: float) -> dict[str, Any]:
        """``conversation.item.create``: the item, checked, stored and announced."""
        item: dict[str, Any] = self.cfg.item.check(ev["item"], "item")
        item.pop("object", None)
        item_id = item.get("id") or self.core.ids.new(Id.ITEM)
        if item_id in self.items:
            raise ClientError("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        previous = ev.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self.items:
            raise ClientError("invalid_value", f"Previous item with id '{previous}' not found.", "previous_item_id")
        if item["type"] == "function_call_output" and not any(
            i.get("type") == "function_call" and i.get("call_id") == item["call_id"] for i in self.items.values()
        ):
            raise ClientError(
                "invalid_value", f"Tool call ID '{item['call_id']}' not found in conversation.", "item.call_id"
            )
        item = {"id": item_id, **{k: v for k, v in item.items() if k != "id"}, "status": "completed"}
        self.announce(item, self.insert(item, previous), t)
        return item

    def truncate(self, ev: dict[str, Any], t: float) -> None:
        item = self.find(ev["item_id"], "item_id")
        delivered = self.audio_ms.get(item["id"], 0.0)
        if item.get("role") != "assistant" or delivered <= 0:  # a user item, or no audio yet
            raise ClientError(
                "unsupported_content_type", "Only model output audio messages can be truncated", "item_id"
            )
        if ev["content_index"] != 0:
            raise ClientError("invalid_value", f"Invalid value: {ev['content_index']}.", "content_index")
        end = ev["audio_end_ms"]
        if end > delivered:
            self.record.truncates.append({"t": t, "item_id": item["id"], "audio_end_ms": end, "ok": False})
            raise ClientError(
                "invalid_value", f"Audio content of {int(delivered)}ms is already shorter than {end}ms", "audio_end_ms"
            )
        self.audio_ms[item["id"]] = float(end)
        self.record.truncates.append({"t": t, "item_id": item["id"], "audio_end_ms": end, "ok": True})
        self.core.send(self.wire.event("item.truncated", item_id=item["id"], content_index=0, audio_end_ms=end), t)

    def delete(self, ev: dict[str, Any], t: float) -> None:
        item = self.find(ev["item_id"], "item_id")
        self.order.remove(item["id"])
        del self.items[item["id"]]
        self.core.send(self.wire.event("item.deleted", item_id=item["id"]), t)

    def retrieve(self, ev: dict[str, Any], t: float) -> None:
        item = self.find(ev["item_id"], "item_id")
        self.core.send(self.wire.event("item.retrieved", item=self.wire.item(item)), t)

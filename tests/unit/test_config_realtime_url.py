"""``realtime_url`` accepts the base form and the documented endpoint form, and refuses anything else at start,
naming the setting and the right form (bridge/config.py)."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("ws://127.0.0.1:8765/v1", "ws://127.0.0.1:8765/v1"),
        ("ws://127.0.0.1:8765/v1/realtime", "ws://127.0.0.1:8765/v1"),
        ("wss://api.openai.com/v1/realtime/", "wss://api.openai.com/v1"),
        ("ws://127.0.0.1:8765/v1/realtime?drop_after_s=2", "ws://127.0.0.1:8765/v1?drop_after_s=2"),
    ],
)
def test_both_forms_reach_the_same_base(given: str, base: str) -> None:
    assert load_settings(None, realtime_url=given).realtime_url == base


@pytest.mark.parametrize("given", ["https://api.openai.com/v1", "api.openai.com/v1", "ws:///v1"])
def test_anything_else_is_refused_naming_the_setting_and_the_form(given: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, realtime_url=given)
    assert refused.value.field == "realtime_url"
    assert "wss://api.openai.com/v1/realtime" in str(refused.value)

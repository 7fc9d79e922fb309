"""The orchestrated-call tests share the end-to-end stack of ``tests/integration/bridge`` (``_bridge_helpers``)."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest puts each test's own folder on sys.path (rootdir-relative imports, no packages under tests/): the bridge
# tests' helpers live one folder over.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bridge"))

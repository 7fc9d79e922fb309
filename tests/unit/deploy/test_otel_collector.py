"""deploy/otel/collector.yaml: a collector configuration whose pipeline names only what it defines, and whose OTLP
receiver is where docs/operating.md tells the nodes to send (there is no collector binary here to run it)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "deploy" / "otel" / "collector.yaml"


def test_the_traces_pipeline_names_only_what_the_file_defines() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    for part in ("receivers", "processors", "exporters"):
        assert pipeline[part], part
        assert set(pipeline[part]) <= set(config[part]), (part, pipeline[part], sorted(config[part]))
    assert pipeline["processors"][0] == "memory_limiter"  # first, as the collector's docs want it


def test_the_receiver_listens_where_the_docs_send_the_nodes() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    endpoint = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    port = endpoint.rsplit(":", 1)[1]
    docs = (ROOT / "docs" / "operating.md").read_text()
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://COLLECTOR:{port}" in docs and "deploy/otel/collector.yaml" in docs

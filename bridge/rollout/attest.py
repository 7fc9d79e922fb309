"""The gate before the rollout (pure): a candidate is armed only with a green replay report of its exact
configuration.

* A variant's **configuration digest** (:func:`config_digest`) is a SHA-256 of what a call on it is told: the
  dialect, the model, the voice, the instructions and the tools' names. A live call's (:func:`plan_digests`: the
  plan's profile with the variant's overrides, model and voice made compatible, as ``bridge.replay.script``'s
  ``variant_plan``) and a replay run's (:func:`run_digest`, from the ``config`` every run of ``report.json`` records)
  are the same digest for the same configuration: change the instructions by a character and it is another one.
* A report **attests** the digests of its runs (:func:`report_digests`) when its gate says green
  (:func:`report_refusal`: ``meta.gate.exit`` 0; a report that recorded no gate attests nothing).
  ``callbridge rollout attest`` registers it for a plan (``bridge.rollout.arming``): an attestation
  (:func:`attestation`) signed like the flag's audit entries, with ``rollout_key``'s first key (:func:`sign`).
* **Arming** (a candidate's weight raised from 0, :func:`armed`) under ``rollout.require_gate`` needs, per candidate
  armed, a valid attestation of its digest (:func:`attestation_refusal`: signed with one of the keys, of this plan and
  digest, green) or an operator's override with a reason; :func:`gate_refusal` says which candidate lacks which.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from bridge.rollout.policy import RolloutSpec, Variant, compatible_voice
from bridge.rollout.seal import SIG_FIELD, Keys, json_sig, same_mac, with_sig

DIGEST_CHARS = 16
GREEN = "green"


class _Plan(Protocol):
    @property
    def rollout_spec(self) -> RolloutSpec | None: ...

    def variant_profile(self, variant: Variant) -> Any: ...


def config_digest(dialect: str, model: str, voice: str, instructions: str, tools: list[str]) -> str:
    """The digest of a configuration: what a call on it is told."""
    body = json.dumps([dialect, model, voice, instructions, sorted(tools)], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:DIGEST_CHARS]


def run_digest(config: Mapping[str, Any]) -> str | None:
    """The digest of a replay run's ``config`` (``bridge.replay.compare.run_config``); None when it lacks a part."""
    parts = [config.get(k) for k in ("dialect", "model", "voice", "instructions")]
    tools = config.get("tools")
    if not all(isinstance(p, str) for p in parts) or not isinstance(tools, list):
        return None
    dialect, model, voice, instructions = (str(p) for p in parts)
    return config_digest(dialect, model, voice, instructions, [str(t) for t in tools])


def plan_digests(plan: _Plan) -> dict[str, str]:
    """Each variant of a rollout plan -> the digest of what its calls are told (none for a pinned plan)."""
    spec = plan.rollout_spec
    if spec is None:
        return {}
    out = {}
    for variant in spec.variants:
        profile = plan.variant_profile(variant)
        model = variant.models()[0]
        voice = compatible_voice(str(profile.voice or ""), model, spec.fallback_voice)
        tools = [str(t.name) for t in profile.tools]
        out[variant.name] = config_digest(variant.dialect, model, voice, str(profile.instructions or ""), tools)
    return out


def report_refusal(data: Any) -> str | None:
    """None if ``data`` (a ``report.json``) is a green replay report, else why it attests nothing."""
    if not isinstance(data, Mapping) or not isinstance(data.get("scripts"), list):
        return "not a replay report (report.json of `callbridge replay --report DIR`)"
    gate = (data.get("meta") or {}).get("gate")
    if not isinstance(gate, Mapping) or not isinstance(gate.get("exit"), int):
        return "the report recorded no gate verdict: replay again to get one"
    if gate["exit"] != 0:
        red = [str(r) for r in gate.get("red") or []]
        return f"the report is red (exit {gate['exit']}: {red[0] if red else 'red'})"
    return None


def report_digests(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """The digest of every run of a report -> its runs (``SCRIPT/RUN``)."""
    out: dict[str, list[str]] = {}
    for script in data.get("scripts") or []:
        if not isinstance(script, Mapping):
            continue
        for run, body in (script.get("runs") or {}).items():
            digest = run_digest(body.get("config") or {}) if isinstance(body, Mapping) else None
            if digest is not None:
                out.setdefault(digest, []).append(f"{script.get('script')}/{run}")
    return out


def attest_sig(key: bytes, fields: Mapping[str, Any]) -> str:
    """The HMAC-SHA256 (hex) of an attestation: every field but ``sig``."""
    return json_sig(key, b"attest", fields, (SIG_FIELD,))


def sign(keys: Keys, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with their ``sig`` by the first of ``keys`` (none without keys)."""
    return with_sig(keys, fields, attest_sig)


def attestation(dialplan: str, variant: str, digest: str, data: Mapping[str, Any], /, **about: str) -> dict[str, Any]:
    """What an attestation of the green report ``data`` holds: the plan, the variant and digest, the verdict, the
    report's runs of it, and ``about`` (who, os_user, when, report: its path as given)."""
    meta = data.get("meta") or {}
    return {
        "dialplan": dialplan,
        "variant": variant,
        "digest": digest,
        "verdict": GREEN,
        "runs": report_digests(data).get(digest, []),
        "target": str(meta.get("target", "")),
        "created": str(meta.get("created", "")),
        **about,
    }


def attestation_refusal(keys: Keys, dialplan: str, digest: str, text: str) -> tuple[dict[str, Any], str | None]:
    """An attestation as read from Redis (``text``): (its fields, None if it vouches for ``digest`` of ``dialplan``,
    else why not). Never raises: what Redis holds is data."""
    try:
        fields = json.loads(text)
    except ValueError:
        return {}, "not JSON"
    if not isinstance(fields, dict):
        return {}, "not an attestation"
    if keys:
        sig = fields.get(SIG_FIELD)
        if not isinstance(sig, str) or not sig:
            return fields, "unsigned"
        if not any(same_mac(sig, attest_sig(key, fields)) for key in keys):
            return fields, "bad signature (another key's, or changed since)"
    if fields.get("dialplan") != dialplan or fields.get("digest") != digest:
        return fields, "of another plan or configuration"
    if fields.get("verdict") != GREEN:
        return fields, f"its report is not green ({fields.get('verdict')})"
    return fields, None


def armed(spec: RolloutSpec, old: Mapping[str, float], new: Mapping[str, float]) -> list[str]:
    """The candidates whose weight goes from 0 to above 0."""
    return [n for n in spec.names if n != spec.safe and old.get(n, 0.0) <= 0 < new.get(n, 0.0)]


def gate_refusal(dialplan: str, variant: str, digest: str | None, found: bool, why: str | None) -> str:
    """Why arming ``variant`` of ``dialplan`` is refused: no digest known here, no attestation of it, or one that
    does not vouch (``why``)."""
    if digest is None:
        return f"{variant}: its configuration is unknown here (no dialplan file of it): nothing attests it"
    how = f"`callbridge rollout attest {dialplan} --report DIR/report.json` of a green replay of it"
    if not found:
        return f"{variant}: no green replay report attests its configuration #{digest} ({how})"
    return f"{variant}: the attestation of its configuration #{digest} is refused: {why} ({how})"


def gate_line(spec_require: bool, dialplan: str) -> str:
    """What ``serve`` logs at start and ``dialplan check`` prints of a rollout plan's gate."""
    if spec_require:
        return f"rollout {dialplan}: a candidate is armed only with a green replay report of it (rollout.require_gate)"
    return (
        f"rollout {dialplan}: rollout.require_gate is off: a candidate may be armed without a green replay report "
        "of its configuration (docs/configuration.md recommends it on)"
    )

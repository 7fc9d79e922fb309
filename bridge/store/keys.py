"""Every Redis key name and TTL the bridge uses, in one place.

===========================================  ==========  ==============================================  ===============
key                                          type        holds                                           TTL
===========================================  ==========  ==============================================  ===============
``cb:call:{<call_id>}``                      hash        one call's state (:data:`CALL_FIELDS`)          CALL_TTL_S
``cb:call:{<call_id>}:events``               stream      event summaries and both transcripts, capped    CALL_TTL_S
                                                         (``XADD MAXLEN ~`` :data:`STREAM_MAXLEN`)
``cb:calls:ended``                           sorted set  ended calls' ids, score = ``ended_at``; trimmed    CALL_TTL_S
                                             to the last CALL_TTL_S by every add (the console's
                                             "recently ended", ``bridge.store.ended``)
``cb:workers``                               set         worker ids that have written a heartbeat        none
``cb:worker:{<worker>}:calls``               set         call ids live on that worker                    CALL_TTL_S
``cb:worker:{<worker>}:hb``                  string      the worker's last heartbeat (epoch seconds)     HEARTBEAT_TTL_S
``cb:{rollout}:flag:<dialplan>``             hash        the rollout flag of one dialplan                none
``cb:{rollout}:dialplans``                   set         dialplans that have a stored flag               none
``cb:{rollout}:audit``                       stream      every flag change: who, when, old, new, why     none; capped
                                                                                                         AUDIT_MAXLEN
``cb:rollout:{<dp>:<variant>}:calls``        sorted set  one member per finished call (its numbers as    HEALTH_TTL_S
                                                         JSON), score = time
``cb:{rollout}:calls:<dp>:<variant>``        sorted set  the same window as older versions wrote it:     HEALTH_TTL_S
                                                         read beside the one above, never written
``cb:{rollout}:refused:<dialplan>``          hash        variant -> JSON {model, code, at}: variants     none
                                                         whose model the service refused
``cb:{rollout}:attested:<dialplan>``         hash        configuration digest -> JSON attestation: a     none
                                                         green replay report of a candidate, signed
                                                         (``bridge.rollout.arming``)
``cb:rollout:{<dialplan>}:records``          stream      one outcome record per finished call (``r``,    RECORDS_TTL_S;
                                                         JSON), a late outcome or a re-arm               capped
                                                         (``bridge.rollout.records``)                    RECORDS_MAXLEN
``cb:rollout:{<dialplan>}:snapshot``         hash        the engine's state after a record (``state``,   RECORDS_TTL_S
                                                         ``last_id``, ``spec``, ``sig``), signed: the
                                                         rollout's whole life, however long its stream
``cb:rollout:{<dp>}:caller:<caller hash>``   string      the call id of the caller's last call (keyed    REPEAT_WINDOW_S
                                                         hash of the number, never the number)
``cb:rollout:{<dialplan>}:decided``          hash        ``<epoch>:<variant>:<action>`` -> the decision  RECORDS_TTL_S
                                                         (one audit entry per decision, whatever the
                                                         number of workers)
``cb:rollout:{<dialplan>}:probe``            string      the worker that sent the plan's last probe of   60 s /
                                                         its safe model: a new one waits until it goes    per_minute
                                                         (``bridge.rollout.probes``)
``cb:{board}:refused:<minute>``              string      INVITEs a worker refused with 486 or 503 in     REFUSED_TTL_S
                                             that minute (epoch minute): the wallboard's
                                             callers who never got through
``cb:{listen}:audit``                        stream      every listen-in: who, which call, start, stop   none; capped
                                                                                                         AUDIT_MAXLEN
``cb:{actions}:audit``                       stream      every supervisor action on a call: who, what,   none; capped
                                                         which call, when, whether a worker took it      AUDIT_MAXLEN
``cb:actions:ack:<request id>``              list        the worker's answer to one action request       30 s
``cb:actions:idem:<digest>``                 string      JSON {fp, status, body}: an action's first      IDEMPOTENCY_
                                                         answer under an Idempotency-Key (the digest of  TTL_S
                                                         the account and the key; never the token)
``cb:{webhooks}:deliveries``                 hash        delivery -> JSON {id, endpoint, type, body,     none; removed
                                                         created, attempts, last, chain, seq}: the body  when sent,
                                                         as signed                                       dropped, or
                                                                                                         expired
``cb:{webhooks}:endpoints``                  set         endpoints with deliveries or dead letters       none
``cb:{webhooks}:bytes``                      hash        endpoint -> bytes of its records (its cap)      none
``cb:{webhooks}:wake``                       list        a token per batch queued: deliverers block on   none; at most 8
                                                         it (``BLPOP``) instead of polling
``cb:{webhooks}:due:<endpoint>``             sorted set  deliveries that may be sent now or later,       none
                                                         score = when due (a claimed one: its lease's
                                                         end); one per call at a time (its chain's head)
``cb:{webhooks}:pending:<endpoint>``         sorted set  every pending delivery, score = when queued     none
``cb:{webhooks}:waiting:<endpoint>``         sorted set  ``<call>|<seq>|<delivery>`` (score 0, by        none
                                                         name): a call's later events, behind its head
``cb:{webhooks}:heads:<endpoint>``           hash        call -> the delivery at the head of its chain   none
``cb:{webhooks}:dead:<endpoint>``            sorted set  dead letters, score = when given up; each       a setting (7 d)
                                                         dropped ``webhook_dead_letter_ttl_s`` after
``cb:{webhooks}:ended:<endpoint>``           sorted set  calls whose ``call.ended`` was queued, score =  CALL_TTL_S
                                                         when: a second one is not (one per call)
``cb:{webhooks}:leases:<endpoint>``          hash        claimed delivery -> ``<lease's end>|<holder>``  none
                                                         (who sends it, for ``webhooks list``); gone
                                                         when the delivery settles
===========================================  ==========  ==============================================  ===============
===========================================  ==========  ==============================================  ===============

Pub/sub channels (nothing stored): ``cb:listen:control`` carries a supervisor's request to hear a call (JSON
``{"call_id", "who"}``, repeated every :data:`LISTEN_RENEW_S` while anyone listens) to every worker;
``cb:listen:{<call_id>}:audio`` carries that call's mixed audio from its worker to the listeners
(``bridge.serve.listen``); ``cb:actions:control`` carries a supervisor's action on a call (JSON ``{"id", "call_id",
"action", "who", "text", "target"}``) to every worker, and the one holding the call answers on the request's ack
list (``bridge.serve.actions``).

The ``{...}`` parts are Redis Cluster hash tags: only the text between the braces picks the slot. A call's hash and
stream share the tag ``{<call_id>}`` (one slot, so one call's writes can be pipelined together on a cluster); a
worker's set and heartbeat share ``{<worker>}``; the rollout's flags, refusals and audit share ``{rollout}``, so a flag
change and its audit entry are one ``MULTI``/``EXEC`` transaction even on a cluster (they are tiny and written by
people), while what every call's end writes has a tag of its plan and variant (the windows, ``{<dialplan>:<variant>}``)
or of its plan (the outcome records, the callers' last records, the decisions: ``{<dialplan>}``), so those writes spread
over the cluster's slots. No command or transaction spans two tags; pipelines that do are
non-transactional, which a cluster client splits per slot. Pub/sub on a cluster is sharded (``SPUBLISH``).

Nothing here, or anywhere under ``cb:``, ever holds an API key or any other credential.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "cb"

# ------------------------------------------------------------------------------------------------ per call
CALL_TTL_S: Final = 24 * 3600  # set at creation and at the end: a call's state stays readable for a day after its end
TTL_REFRESH_S: Final = 600.0  # a live call's keys (and its worker's live set) get their TTL again this often
STREAM_MAXLEN: Final = 500  # approximate cap (XADD MAXLEN ~): trimmed by whole radix-tree nodes, so "about"
SUMMARY_MAX_CHARS: Final = 2000  # a stream entry's summary (a transcript line) is cut beyond this
ENDED_CALLS: Final = f"{PREFIX}:calls:ended"  # the index of ended calls still readable (their hash has not expired)

# The call hash, in the order the issue lists them. ``last_transcript`` is an extra: the supervisor's list view shows
# the last transcript line without reading the stream. ``variant`` is the rollout variant the call landed on (a plan
# pinned to one dialect: the dialect's name), beside its dialect, model and voice.
# original_called: the number a forwarded call was first placed to (Diversion, History-Info), masked as the caller is
_WHO: Final = ("call_id", "worker", "caller", "called", "original_called")
IDENTITY_FIELDS: Final = (*_WHO, "dialplan", "variant", "dialect", "model", "voice")
PROTOCOL_FIELDS: Final = ("phase", "session_id", "conversation_id", "response_id", "item_id")
PROGRESS_FIELDS: Final = ("last_user_audio_seq", "last_ack_event_id", "played_ms")
# end_reason: why the call ended, in words; ended_by: who ended it (bridge.events.EndedBy); peer_reason: the Reason
# header (RFC 3326) of the caller's side's BYE or CANCEL that ended it, written again from its parsed values
TIME_FIELDS: Final = ("started_at", "last_activity", "ended_at", "end_reason", "ended_by", "peer_reason")
# sip_dialog: JSON sealed under the node's listen_key (bridge/store/dialogseal.py), lets a restarted worker send
# BYE; sip_call_id: the caller's Call-ID (data, never a key); answered_at and webhook_seq: when the call was answered
# and the seq of its latest webhook event (bridge/serve/webhooks.py), so the call.ended sent for a worker that died
# continues the call's chain; trace_id: a traced (and sampled) call's trace (32 hex digits; tracing: otlp), which
# the console's call detail shows and links (tracing_ui_url), and trace_span its root span (16 hex digits), which the
# call.ended of a call whose worker died continues (and a stand-in root span takes the place of)
EXTRA_FIELDS: Final = (
    "last_transcript",
    "sip_dialog",
    "sip_call_id",
    "answered_at",
    "webhook_seq",
    "trace_id",
    "trace_span",
)
# What the console's per-plan figures need without reading streams (``bridge.supervisor.plan_stats``): the call's
# outcome (``completed``, ``transferred``, ``failed``), its greeting and first reply (``docs/operating.md``, what each
# figure means), whether a supervisor acted on it, and "1"/"0" flags: the caller hears hold audio now (an outage's
# hold message or a tool's soft hold), the model is away now, the model was away at some point; and where a warm
# transfer is (a TransferStep, then its TransferOutcome) and since when (``transfer_at``, epoch seconds of its first
# step: how long the caller has waited for a human); after the call, the model's disposition, summary and fields
# (JSON) with the post-call status (bridge/call/wrapup.py), the names of the compliance checks that failed
# (comma-separated) and every check's row (JSON: name, passed, detail); "1" once the call's variant model failed to
# connect and the call went on on its fallback model (``fallback``; bridge/serve/variant.py).
SUMMARY_FIELDS: Final = (
    "outcome",
    "greeting_ms",
    "first_reply_ms",
    "supervised",
    "on_hold",
    "in_outage",
    "had_outage",
    "transfer",
    "transfer_at",
    "disposition",
    "call_summary",
    "call_fields",
    "post_call_status",
    "failed_checks",
    "checks",
    "fallback",
)
# so far: the longest the caller waited for the agent (holds included), and the longest dead air
QUALITY_FIELDS: Final = ("longest_wait_ms", "longest_silence_ms")
CALL_FIELDS: Final = (
    IDENTITY_FIELDS + PROTOCOL_FIELDS + PROGRESS_FIELDS + TIME_FIELDS + EXTRA_FIELDS + SUMMARY_FIELDS + QUALITY_FIELDS
)

# ------------------------------------------------------------------------------------------------ workers
# A lost worker's callers get their BYE about HEARTBEAT_TTL_S + REAP_INTERVAL_S + a SIP probe after the loss
# (bridge/store/reaper.py); a worker cut off from Redis answers the probe and keeps its calls.
HEARTBEAT_INTERVAL_S: Final = 1.0  # a worker refreshes its heartbeat this often (one SET ... GET in its next write) ...
HEARTBEAT_TTL_S: Final = 3  # ... and is suspected by the reaper once it has missed about two
REAP_INTERVAL_S: Final = 1.0  # how often each worker's writer looks for dead workers (one pipeline; idempotent)
WORKERS: Final = f"{PREFIX}:workers"

# ------------------------------------------------------------------------------------------------ rollout
ROLLOUT_TAG: Final = "{rollout}"
ROLLOUT_DIALPLANS: Final = f"{PREFIX}:{ROLLOUT_TAG}:dialplans"
ROLLOUT_AUDIT: Final = f"{PREFIX}:{ROLLOUT_TAG}:audit"
AUDIT_MAXLEN: Final = 10_000  # approximate cap of the audit stream (years of human changes)
HEALTH_RETENTION_S: Final = 3600  # calls older than this are trimmed; the longest allowed rollback window
HEALTH_TTL_S: Final = 2 * HEALTH_RETENTION_S  # a window nobody writes to any more disappears by itself
RECORDS_MAXLEN: Final = 200_000  # approximate cap of a plan's outcome records (weeks of a busy plan)
RECORDS_TTL_S: Final = 35 * 86400  # a plan nobody calls any more loses its records after five weeks
REPEAT_WINDOW_S: Final = 72 * 3600  # a call back within this is a repeat call (first-contact resolution)
SNAPSHOT_EVERY: Final = 10_000  # a rollout's engine state is kept after every this many stream entries


# ------------------------------------------------------------------------------------------------ wallboard
BOARD_TAG: Final = "{board}"  # one slot: the wallboard reads a quarter hour of buckets in one MGET
REFUSED_BUCKET_S: Final = 60  # refused INVITEs are counted per minute ...
REFUSED_TTL_S: Final = 3600  # ... and each minute is kept an hour


def refused_calls(minute: int) -> str:
    """The count of INVITEs refused with 486 or 503 in epoch minute ``minute`` (``int(t // 60)``)."""
    return f"{PREFIX}:{BOARD_TAG}:refused:{minute}"


# ------------------------------------------------------------------------------------------------ listen-in
LISTEN_CONTROL: Final = f"{PREFIX}:listen:control"
LISTEN_AUDIT: Final = f"{PREFIX}:{{listen}}:audit"
LISTEN_RENEW_S: Final = 1.0  # a listener repeats its request this often; a worker that missed one starts late


def tagged(kind: str, owner: str, *rest: str) -> str:
    """``cb:KIND:{OWNER}[:REST...]``: the braces make ``OWNER`` the key's Redis Cluster hash tag, so every key of one
    call (or one worker) lands in one slot and one pipeline or transaction can span them."""
    return ":".join((PREFIX, kind, f"{{{owner}}}", *rest))


def listen_audio(call_id: str) -> str:
    """The channel of one call's listen-in audio."""
    return tagged("listen", call_id, "audio")


def call(call_id: str) -> str:
    return tagged("call", call_id)


def call_events(call_id: str) -> str:
    return tagged("call", call_id, "events")


def worker_calls(worker: str) -> str:
    return tagged("worker", worker, "calls")


def worker_heartbeat(worker: str) -> str:
    return tagged("worker", worker, "hb")


def rollout_flag(dialplan: str) -> str:
    return ":".join((PREFIX, ROLLOUT_TAG, "flag", dialplan))


def rollout_attested(dialplan: str) -> str:
    """The green replay reports registered for one dialplan, by configuration digest (``bridge.rollout.arming``)."""
    return ":".join((PREFIX, ROLLOUT_TAG, "attested", dialplan))


def rollout_refused(dialplan: str) -> str:
    """The variants of one dialplan whose model the service refused (``bridge.rollout.refusals``)."""
    return ":".join((PREFIX, ROLLOUT_TAG, "refused", dialplan))


def rollout_records(dialplan: str) -> str:
    """A rollout plan's outcome records, one per finished call (``bridge.rollout.records``)."""
    return tagged("rollout", dialplan, "records")  # its plan's own tag: the per-call writes spread over slots


def rollout_caller(dialplan: str, caller_hash: str) -> str:
    """The id of the record of a caller's last call of a plan; ``caller_hash`` is a keyed hash (hex)."""
    return tagged("rollout", dialplan, "caller", caller_hash)


def rollout_snapshot(dialplan: str) -> str:
    """A rollout plan's engine state after a record, signed (``bridge.rollout.records``)."""
    return tagged("rollout", dialplan, "snapshot")


def rollout_decided(dialplan: str) -> str:
    """The decisions of a plan's experiment, one field per epoch and variant."""
    return tagged("rollout", dialplan, "decided")


def rollout_probe(dialplan: str) -> str:
    """The mark of a plan's last probe: its probes' rate over every worker and node (``bridge.rollout.probes``)."""
    return tagged("rollout", dialplan, "probe")


def variant_calls_untagged(dialplan: str, variant: str) -> str:
    """Where versions before the per-variant tags kept a variant's window (under ``{rollout}``). While such a version
    still runs beside this one in a rolling upgrade its workers write there, so the window is read from both keys
    until that one expires (``HEALTH_TTL_S`` after its last write); nothing writes it any more."""
    return ":".join((PREFIX, ROLLOUT_TAG, "calls", dialplan, variant))


def variant_calls(dialplan: str, variant: str) -> str:
    """The sliding window of one rollout variant's finished calls on one dialplan (``bridge.rollout.health``). Its
    own hash tag (plan and variant): every call's end writes here, so on a cluster the windows spread over slots."""
    return tagged("rollout", f"{dialplan}:{variant}", "calls")


# ------------------------------------------------------------------------------------------------ call actions
CALL_ACTIONS: Final = f"{PREFIX}:actions:control"
CALL_ACTIONS_AUDIT: Final = f"{PREFIX}:{{actions}}:audit"
ACTION_ACK_TTL_S: Final = 30


def takeover_audio(call_id: str) -> str:
    """The channel of a taken-over call's supervisor audio (PCM16 LE 8 kHz mono), ``serve`` to the call's worker."""
    return tagged("actions", call_id, "takeover")


def call_action_ack(request_id: str) -> str:
    """The list one worker answers one action request on."""
    return f"{PREFIX}:actions:ack:{request_id}"


IDEMPOTENCY_TTL_S: Final = 24 * 3600  # an action's answer is given again to a retry with its key for a day
IDEMPOTENCY_PENDING_TTL_S: Final = 60  # a key whose first request is still being answered (or whose server died)


def action_idempotency(digest: str) -> str:
    """One Idempotency-Key's first answer; ``digest``: SHA-256 hex of the account and the key (what a client sent
    is never a key name)."""
    return f"{PREFIX}:actions:idem:{digest}"


# ------------------------------------------------------------------------------------------------ webhooks
# Pending deliveries of signed webhooks (bridge/webhooks/queue.py): one tag, so a claim or a settle is one Lua script
# on a cluster too. A delivery is ``<endpoint>|<webhook id>``; only the endpoint's name is stored, never its secret.
WEBHOOK_TAG: Final = "{webhooks}"
WEBHOOKS_DELIVERIES: Final = f"{PREFIX}:{WEBHOOK_TAG}:deliveries"
WEBHOOKS_ENDPOINTS: Final = f"{PREFIX}:{WEBHOOK_TAG}:endpoints"
WEBHOOKS_BYTES: Final = f"{PREFIX}:{WEBHOOK_TAG}:bytes"
WEBHOOKS_WAKE: Final = f"{PREFIX}:{WEBHOOK_TAG}:wake"
# what versions before per-endpoint queues wrote (one due set, one queue-time set, one dead set): adopted at start
WEBHOOKS_LEGACY_DUE: Final = f"{PREFIX}:{WEBHOOK_TAG}:due"
WEBHOOKS_LEGACY_CREATED: Final = f"{PREFIX}:{WEBHOOK_TAG}:created"
WEBHOOKS_LEGACY_DEAD: Final = f"{PREFIX}:{WEBHOOK_TAG}:dead"


def webhooks_of(endpoint: str, part: str) -> str:
    """One endpoint's ``due``, ``pending``, ``waiting``, ``heads``, ``dead``, ``ended`` or ``leases`` key (the one
    tag: one slot)."""
    return f"{PREFIX}:{WEBHOOK_TAG}:{part}:{endpoint}"


# ------------------------------------------------------------------------------------------------ kinds (measuring)
def kind_of(key: str) -> str:
    """What a key (or channel) named here is, for counting Redis work by kind (``bench calls --redis``): ``call hash``,
    ``call stream``, ``ended index``, ``workers``, ``worker live set``, ``worker heartbeat``, ``rollout``,
    ``listen-in``, ``actions``, or ``other`` (pure)."""
    if key == ENDED_CALLS:
        return "ended index"
    if key == WORKERS:
        return "workers"
    parts = key.split(":")
    if len(parts) < 2 or parts[0] != PREFIX:
        return "other"
    if parts[1] == "call" and len(parts) >= 3:
        return "call stream" if parts[-1] == "events" and len(parts) > 3 else "call hash"
    if parts[1] == "worker" and len(parts) >= 4:
        return {"calls": "worker live set", "hb": "worker heartbeat"}.get(parts[-1], "other")
    if parts[1] in (ROLLOUT_TAG, "rollout"):
        return "rollout"
    if parts[1] in ("listen", "{listen}"):
        return "listen-in"
    if parts[1] in ("actions", "{actions}"):
        return "actions"
    if parts[1] == WEBHOOK_TAG:
        return "webhooks"
    if parts[1] == BOARD_TAG:
        return "wallboard"
    return "other"

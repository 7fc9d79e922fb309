"""The model's side: the wire dialects as data (:mod:`.dialects`, capabilities beside each), the sans-I/O
protocol core that turns wire text into the bridge's events and back, and the sockets that carry it.

::

    client.py       A thin asyncio pump between :class:`RealtimeProtocol` and a ``websockets`` connection
    credentials.py  credential sources for the Realtime client: the next connect's credential, dropped when refused
    dialects/       the wire dialects (beta, GA, GPT-Live), each one table that owns its whole wire (mapped in
                    its own package docstring)
    downlink.py     the downlink in C: the model's audio deltas from the Realtime socket's bytes to 8 kHz PCM
                    without Python per delta
    profile.py      the agent profile: what a dialplan says about the model's session, independent of the wire
                    dialect
    protocol.py     the Realtime protocol core: wire text in, bridge events out; bridge commands in, wire text out
    readset.py      every call's Realtime socket read, opened, scanned and its audio sunk in one C call per beat
    tls_native.py   the TLS engine in C (``bridge/native/tls.c``): a TLS client over memory BIOs for the native
                    uplink over ``wss://``
    ws_fastpath.py  the Realtime socket: ``websockets``' public sans-I/O protocol
                    (``websockets.client.ClientProtocol``) over the bridge's own asyncio transport, with four fast
                    paths
    ws_plain.py     the Realtime socket on websockets' own asyncio client, where the sans-I/O API is missing
"""

"""callbridge: a call-center telephony bridge between SIP callers and OpenAI voice sessions.

The packages stand on floors; each imports only what stands below it (``tests/unit/test_house.py`` checks it).
Lowest first::

    events.py, privacy/, native/,    the one event vocabulary; masking of personal data; the C parts; what
    meaning.py                       words say (negations, facts, similarity: the replay's and the emulator's)
    errors.py, metrics.py, audio/    errors that name a file and field; every metric, defined once; pure audio
    realtime/, runtime/, config.py,  the model's wire dialects and sockets; what every process runs on; the
    store/, orchestrator/            settings; Redis; an orchestrator's protocol
    sip/, emulator/, rollout/,       the telephone side (the only pjsua2 user); the model emulator; the guarded
    tools/                           rollout; business tools (HTTP, MCP)
    webhooks/                        signed webhooks to the contact center's systems
    dialplan.py                      what a called number gets: model, voice, tools, transfer, rollout
    call/                            one call, from the answer to its record
    supervisor/                      the console and HTTP API
    serve/                           ``callbridge serve``: the node, its workers, the front
    devkit/                          the demo's and the tests' real parts on private ports
    replay/                          QA replays of call scripts
    cli.py, __main__.py              ``callbridge``'s subcommands, loaded by name

Each package's own docstring maps its modules.
"""

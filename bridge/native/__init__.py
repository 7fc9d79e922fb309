"""The C parts (``*.c`` here), compiled into the wheel beside their sources, else on first use by :mod:`.build`; each
has a Python twin that runs without them, and ``python -m bridge.devkit.native_check`` checks one against the other.

::

    build.py       find the package's library of one of its C sources, else compile it, once per source version
    callbridge.h   what the C parts share: the types of the functions one part hands another
    cport.c        the media port: a pjmedia_port whose clock-thread side never enters Python
                   (Python face: bridge/sip/cport.py)
    downlink.c     the model's audio deltas from the Realtime socket's bytes to 8 kHz PCM, and the reader of
                   every call's socket in one call per beat (bridge/realtime/downlink.py, readset.py)
    echo.c         the echo guard, decision for decision as bridge/audio/echo.py (bridge/audio/echo_native.py)
    playout.c      the playout ring: the model's audio queued for the caller, with its accounting
                   (bridge/audio/playout_native.py)
    resample.c     the polyphase FIRs of bridge/audio/resample.py, bit for bit (bridge/audio/native.py)
    tls.c          a TLS client over memory BIOs for the native uplink over wss:// (bridge/realtime/tls_native.py)
"""

"""``python -m bridge.devkit.native_check [--packaged]``: load every C part now (building it if the package has none)
and check it against its Python twin, saying where each came from. ``--packaged``: exit 1 unless every part was
loaded from the installed package (a wheel's install, with nothing compiled)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.devkit.native_check", description=__doc__)
    parser.add_argument("--packaged", action="store_true", help="fail unless every part came from the package")
    packaged_only = parser.parse_args(argv).packaged

    from bridge.audio import playout_native
    from bridge.audio.echo_native import native_echo
    from bridge.audio.resample import native_kernels
    from bridge.native import build
    from bridge.realtime import downlink, tls_native
    from bridge.sip.cport import native_ports

    parts = (
        ("native media port", build.CPORT_SOURCE, native_ports().why),
        ("native resampler", build.RESAMPLE_SOURCE, native_kernels().why),
        ("native echo guard", build.ECHO_SOURCE, native_echo().why),
        ("native TLS engine", build.TLS_SOURCE, "" if tls_native.load() else tls_native.problem() or "not loaded"),
        ("native downlink", build.DOWNLINK_SOURCE, "" if downlink.load() else downlink.problem() or "not loaded"),
        (
            "native playout ring",
            build.PLAYOUT_SOURCE,
            "" if playout_native.native_playout() else playout_native.problem() or "not loaded",
        ),
    )
    failed = 0
    for name, source, why in parts:
        came = build.origin(source)
        if why:
            print(f"{name}: unavailable ({why}); the Python version is used")
        elif came is None:
            print(f"{name}: loaded and checked")
        else:
            print(f"{name}: loaded from {came[0]} ({came[1]}) and checked")
        failed += packaged_only and (bool(why) or came is None or came[0] != build.PACKAGE)
    if failed:
        print(f"!! {failed} of {len(parts)} C parts did not come from the installed package")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

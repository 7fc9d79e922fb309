"""``python -m bridge.devkit.native_check``: build every C part now and check it against its Python twin."""

from __future__ import annotations


def main() -> int:
    from bridge.audio import playout_native
    from bridge.audio.echo_native import native_echo
    from bridge.audio.resample import native_kernels
    from bridge.realtime import downlink, tls_native
    from bridge.sip.cport import native_ports

    parts = (
        ("native media port", native_ports().why),
        ("native resampler", native_kernels().why),
        ("native echo guard", native_echo().why),
        ("native TLS engine", "" if tls_native.load() else tls_native.problem() or "not loaded"),
        ("native downlink", "" if downlink.load() else downlink.problem() or "not loaded"),
        ("native playout ring", "" if playout_native.native_playout() else playout_native.problem() or "not loaded"),
    )
    for name, why in parts:
        print(f"{name}: " + (f"unavailable ({why}); the Python version is used" if why else "built and checked"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

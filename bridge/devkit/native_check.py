"""``python -m bridge.devkit.native_check``: build every C part now and check it against its Python twin."""

from __future__ import annotations


def main() -> int:
    from bridge.audio.resample import native_kernels
    from bridge.sip.cport import native_ports

    for name, why in (("native media port", native_ports().why), ("native resampler", native_kernels().why)):
        print(f"{name}: " + (f"unavailable ({why}); the Python version is used" if why else "built and checked"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What pjsua2 is told about transports and accounts: UDP, TCP and TLS listeners, the account's URI, media ports,
NAT addresses, session timers and SRTP. Built from a :class:`~bridge.sip.sipconfig.SipConfig`; the one place
its :class:`~bridge.sip.sipmsg.Transport` and :class:`~bridge.sip.sipconfig.SrtpMode` become pjsua2's constants.

* **TLS** (RFC 5630): a ``PJSIP_TRANSPORT_TLS`` listener on ``tls_port`` with the certificate and key; the far end
  of the connections this side opens (a softphone calling a trunk, a transfer's outbound leg) is verified against
  the CA file, or the system's CA store without one (``tls_verify`` False: not verified). Callers are not asked for
  a client certificate: trunks authenticate by address or digest, as over UDP.
* **sips:** the account URI is ``sips:`` when the endpoint speaks TLS: pjsua then answers a ``sips:`` call with a
  ``sips:`` Contact (``pjsua_acc_create_uas_contact``: ``secure && acc->is_sips``), which a ``sips:`` caller
  requires (RFC 5630 §3.1.3); over UDP and TCP the Contact stays ``sip:``.
* **SRTP** (RFC 4568 SDES, RFC 3711): ``srtp`` ``off``, ``optional`` (offered and accepted, plain RTP accepted too)
  or ``mandatory`` (an offer without ``a=crypto`` gets ``488 Not Acceptable Here`` from pjsua itself); the suites
  are AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32, SDES keying only. The SDES keys travel in the SDP, so they
  are secret only over TLS: with TLS on, SRTP is never ``off`` (:func:`srtp_mode`: ``optional`` at least, so that a
  ``sips:`` call gets it), and an offer with keys over UDP or TCP, or a ``sips:`` offer without them, gets ``488``
  before pjsua sees it (bridge.sip.dialogguard, ``media_security``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from typing import Any

import pjsua2 as pj

from bridge.sip.sipconfig import SipConfig, SrtpMode
from bridge.sip.sipmsg import Transport

TRANSPORT_TYPES = {
    Transport.UDP: pj.PJSIP_TRANSPORT_UDP,
    Transport.TCP: pj.PJSIP_TRANSPORT_TCP,
    Transport.TLS: pj.PJSIP_TRANSPORT_TLS,
}
SRTP_USE = {
    SrtpMode.OFF: pj.PJMEDIA_SRTP_DISABLED,
    SrtpMode.OPTIONAL: pj.PJMEDIA_SRTP_OPTIONAL,
    SrtpMode.MANDATORY: pj.PJMEDIA_SRTP_MANDATORY,
}
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")  # RFC 4568 §6.2; first is preferred


def sip_listen_port(cfg: SipConfig) -> int:
    """The UDP and TCP listeners' port: ``port``, or with 0 and both transports one number free for both."""
    if cfg.port or not {Transport.UDP, Transport.TCP} <= set(cfg.transports):
        return cfg.port
    return shared_port(cfg.host or "0.0.0.0")


def shared_port(host: str, candidates: Iterable[int] | None = None) -> int:
    """A port free on ``host`` for UDP and TCP both, for a listener given port 0 on both.

    pjsua binds UDP first, on a port the kernel picks, then TCP on the same number, which a TCP socket may already
    hold (a client connection's ephemeral port, or another server's listener): the start would then fail with
    "address in use". Each candidate (by default, the kernel's UDP picks) is tried for both; the first free one is
    returned. A port so found may be taken again before pjsua binds it, in the microseconds between: rare, and a
    worker pool restarts a worker that could not bind."""
    for port in candidates if candidates is not None else _udp_picks(host):
        if _free(host, port, socket.SOCK_DGRAM) and _free(host, port, socket.SOCK_STREAM):
            return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


def _udp_picks(host: str, tries: int = 100) -> Iterator[int]:
    for _ in range(tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        yield port  # once the probe is closed


def _free(host: str, port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as probe:
        if kind is socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pjsua's listener: TIME_WAIT is no hold
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def transport_config(name: Transport, cfg: SipConfig, port: int) -> Any:
    """The ``TransportConfig`` of one listener."""
    tc = pj.TransportConfig()
    tc.boundAddress = "" if cfg.host in ("", "0.0.0.0") else cfg.host
    tc.port = port
    if cfg.public_address:
        tc.publicAddress = cfg.public_address  # Via and Contact behind NAT
    if name is Transport.TLS:
        tls = tc.tlsConfig
        tls.certFile = cfg.tls_cert
        tls.privKeyFile = cfg.tls_key
        tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3  # RFC 8996: nothing older
        if cfg.tls_ca:
            tls.CaListFile = cfg.tls_ca
        # without a CA file OpenSSL's default paths (the system's CA store) verify; never the bundle as a file: a
        # listener given one fails every handshake it accepts
        tls.verifyServer = cfg.tls_verify
        tls.verifyClient = False
        tls.requireClientCert = False
    return tc


def account_config(cfg: SipConfig, host: str, sip_port: int, credentials: tuple[str, str] | None) -> Any:
    """The ``AccountConfig`` of the local account: its URI, media ports and addresses, timers and SRTP."""
    acfg = pj.AccountConfig()
    scheme = "sips" if Transport.TLS in cfg.transports else "sip"
    acfg.idUri = f"{scheme}:{cfg.user}@{host}:{sip_port}"
    if credentials is not None:
        user, password = credentials
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    media = acfg.mediaConfig.transportConfig
    media.port = cfg.rtp_port
    media.portRange = cfg.rtp_port_range
    if cfg.host not in ("", "0.0.0.0"):
        media.boundAddress = cfg.host
    if cfg.rtp_public_address or cfg.public_address:
        media.publicAddress = cfg.rtp_public_address or cfg.public_address  # SDP c= and o= behind NAT
    # RFC 4028 on every call: a caller that supports it may be the refresher (and a session it fails to refresh
    # ends with a BYE from pjsua); for one that does not, pjsua is the refresher (RFC 4028 §9), and a caller that
    # vanished fails the refresh, which ends the call too (bridge.sip.bounds)
    timers = acfg.callConfig
    timers.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
    timers.timerSessExpiresSec = cfg.session_expires_s
    timers.timerMinSESec = cfg.session_min_se_s
    # RFC 5761: RTP and RTCP on one port when the offer says a=rtcp-mux (the answer says so too); without it in the
    # offer, RTCP stays on its own port
    acfg.mediaConfig.rtcpMuxEnabled = True
    _srtp(acfg.mediaConfig, srtp_mode(cfg))
    return acfg


def srtp_mode(cfg: SipConfig) -> SrtpMode:
    """The SRTP mode pjsua is given: ``srtp``, but with TLS on never ``off`` (a ``sips:`` call must get SRTP)."""
    mode = SrtpMode(cfg.srtp)
    return SrtpMode.OPTIONAL if mode is SrtpMode.OFF and Transport.TLS in cfg.transports else mode


def _srtp(media: Any, mode: SrtpMode) -> None:
    media.srtpUse = SRTP_USE[mode]
    media.srtpSecureSignaling = 0  # any transport: the operator chose SRTP; SDES keys are secret over TLS only
    if mode is SrtpMode.OFF:
        return
    opt = media.srtpOpt
    opt.keyings.clear()
    opt.keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
    opt.cryptos.clear()
    for name in SRTP_SUITES:
        crypto = pj.SrtpCrypto()
        crypto.name = name
        opt.cryptos.append(crypto)


def secure_media(call: Any, index: int) -> bool:
    """Does the call's audio stream ``index`` run SRTP (RTP/SAVP, RFC 3711)?"""
    return int(call.getStreamInfo(index).proto) == int(pj.PJMEDIA_TP_PROTO_RTP_SAVP)

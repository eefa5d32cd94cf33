"""Why a SuperNode could not join: its log classified into one cause, and whether retrying can heal it.

``flower-supernode`` writes the reason it gave up into its log (``<work_dir>/logs/supernode.log``), between
``Failed to initialize the connection to the SuperLink.`` and ``The SuperNode could not establish a
connection``. :func:`classify_supernode_log` reads the part of the log one attempt wrote and names the cause;
:func:`describe` turns it into the line ``endofed-client`` prints, with what the server certificate says when
it was fetched (:func:`server_certificate_facts`); :func:`should_give_up` decides when to stop restarting.
The patterns are the lines Flower 1.42 and OpenSSL 3 print (tests/launch/test_diagnose.py holds real ones).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from endofed.launch.stream import ANSI

HOSTNAME, NOT_YET_VALID, EXPIRED, UNKNOWN_CA = "hostname", "not-yet-valid", "expired", "unknown-ca"
BAD_CERTIFICATE, NOT_TLS, KEY_REFUSED = "bad-certificate", "not-tls", "key-refused"
NETWORK, PORT_IN_USE, UNKNOWN = "network", "port-in-use", "unknown"

# Identical consecutive failures after which restarting stops. A certificate does not change by itself; a key may
# still be registered by the coordinator's operator (endofed-server registers every key right after its
# SuperLink starts, so a site started first can be refused once or twice), so a refused key gets ~2 minutes.
# Kinds not listed (network outage, a taken local port, unknown) are retried until stopped.
GIVE_UP_AFTER = {HOSTNAME: 3, NOT_YET_VALID: 3, EXPIRED: 3, UNKNOWN_CA: 3, BAD_CERTIFICATE: 3, NOT_TLS: 3,
                 KEY_REFUSED: 10}  # fmt: skip

_MISMATCH = re.compile(r"(?:IP address|Hostname) mismatch, certificate is not valid for '([^']*)'")
_UNTRUSTED = (
    "unable to get (?:local )?issuer certificate|self[- ]signed certificate|unable to verify the first certificate"
)
_UNREACHABLE = (
    "Connection refused|Name or service not known|Temporary failure in name resolution|Network is unreachable|"
    "No route to host|timed out|Connection reset|Server disconnected"
)
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (  # first match wins
    (HOSTNAME, _MISMATCH),
    (NOT_YET_VALID, re.compile(r"certificate is not yet valid")),
    (EXPIRED, re.compile(r"certificate has expired")),
    (UNKNOWN_CA, re.compile(_UNTRUSTED)),
    (BAD_CERTIFICATE, re.compile(r"CERTIFICATE_VERIFY_FAILED")),
    (NOT_TLS, re.compile(r"WRONG_VERSION_NUMBER|wrong version number|packet length too long|record layer failure")),
    (KEY_REFUSED, re.compile(r"\[code: 200[14]\]|Failed to activate SuperNode|must be registered via the CLI")),
    (PORT_IN_USE, re.compile(r"error while attempting to bind on address .*address already in use")),
    (NETWORK, re.compile(_UNREACHABLE)),
)
_NOISE = re.compile(  # lines that never say why: start-up, shutdown, Flower's boilerplate around the cause
    r"^(INFO|DEBUG)\b|^INFO:|^WARNING\s*:\s*Connection attempt failed|Exit Code: \d+$|^For more information|"
    r"^The SuperNode could not establish|^Failed to initialize the connection|SSL/TLS handshake error detected"
)
_CAUSE_INTRO = "Failed to initialize the connection to the SuperLink."
MAX_DETAIL_CHARS = 200
MAX_LOG_BYTES = 64 * 1024


@dataclass(frozen=True)
class Cause:
    """Why one attempt failed: a kind (the constants above) and the log line that says so (one line, cut)."""

    kind: str
    detail: str


@dataclass(frozen=True)
class CertFacts:
    """What the SuperLink's certificate says (fetched without trusting it, to explain a refusal)."""

    names: tuple[str, ...]  # subject alternative names (DNS names and IP addresses)
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str


def log_size(path: Path) -> int:
    """The size of ``path`` in bytes (0 if it does not exist): where the next attempt's output starts."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def read_log_since(path: Path, offset: int, max_bytes: int = MAX_LOG_BYTES) -> str:
    """What was appended to ``path`` after ``offset`` (its last ``max_bytes``; all of it if the file shrank)."""
    try:
        with Path(path).open("rb") as handle:
            size = handle.seek(0, 2)
            start = offset if 0 <= offset <= size else 0
            handle.seek(max(start, size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _cut(line: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``line`` stripped, cut to ``limit`` characters with an ellipsis."""
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def meaningful_lines(text: str) -> list[str]:
    """The log lines that may say why (colour codes removed; start-up, shutdown and boilerplate dropped)."""
    lines = [ANSI.sub("", line).strip() for line in text.splitlines()]
    return [line for line in lines if line and not _NOISE.search(line)]


def classify_supernode_log(text: str) -> Cause:
    """The cause of a SuperNode exit from what it logged during one attempt.

    Args:
        text: the log lines of that attempt (see :func:`read_log_since`).

    Returns:
        The first matching kind in the order of the patterns, with the line that matched; otherwise
        ``UNKNOWN`` with the line Flower gave as the cause, else the last meaningful line (or ``""``).
    """
    lines = [ANSI.sub("", line).strip() for line in text.splitlines()]
    for kind, pattern in _PATTERNS:
        for line in lines:
            if pattern.search(line):
                return Cause(kind, _cut(line))
    if _CAUSE_INTRO in lines:
        after = lines[lines.index(_CAUSE_INTRO) + 1 :]
        if after and after[0]:
            return Cause(UNKNOWN, _cut(after[0]))
    useful = meaningful_lines(text)
    return Cause(UNKNOWN, _cut(useful[-1]) if useful else "")


def should_give_up(history: Sequence[Cause], limits: dict[str, int] | None = None) -> bool:
    """Whether to stop restarting: the last cause repeated ``limits[kind]`` times in a row (see GIVE_UP_AFTER).

    Causes are identical when kind and detail are equal; a kind without a limit never gives up.
    """
    if not history:
        return False
    last = history[-1]
    limit = (GIVE_UP_AFTER if limits is None else limits).get(last.kind)
    if limit is None:
        return False
    repeats = 0
    for cause in reversed(history):
        if cause != last:
            break
        repeats += 1
    return repeats >= limit


def give_up_reason(history: Sequence[Cause], retries: int | None = None) -> str | None:
    """Why restarting stops after the failures in ``history`` (e.g. ``"3 identical failures, giving up"``), or ``None``.

    ``retries``: restarts allowed in all (``None``: no limit), on top of :func:`should_give_up`.
    """
    if should_give_up(history):
        return f"{GIVE_UP_AFTER[history[-1].kind]} identical failures, giving up"
    if retries is not None and len(history) > retries:
        return f"{len(history)} attempts, giving up"
    return None


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def server_certificate_facts(address: str, timeout_s: float = 5.0) -> CertFacts | None:
    """Fetch the certificate the SuperLink at ``address`` presents, without verifying it; ``None`` if unreachable.

    Only used to explain a refused certificate: nothing is sent over this connection.
    """
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der) if der else None
    except (OSError, ValueError):
        return None
    if cert is None:
        return None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in sans if isinstance(n, (x509.DNSName, x509.IPAddress)))
    except x509.ExtensionNotFound:
        names = ()
    return CertFacts(names, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.issuer.rfc4514_string())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _when(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def openssl_reason(detail: str) -> str:
    """The words of an OpenSSL or Flower error line without its codes.

    >>> openssl_reason("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: expired (_ssl.c:1006)")
    'expired'
    >>> openssl_reason("[code: 2004] Failed to activate SuperNode.")
    'Failed to activate SuperNode.'
    """
    text = re.sub(r"^\[(?:SSL: [A-Z_]+|code: \d+)\]\s*", "", detail)
    text = re.sub(r"^certificate verify failed:\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


def describe(
    cause: Cause,
    address: str,
    facts: CertFacts | None = None,
    ca_path: Path | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The cause in words, for ``SuperNode could not join <address>: <this>``.

    Args:
        cause: from :func:`classify_supernode_log`.
        address: the site's ``server_address``.
        facts: the SuperLink's certificate (from :func:`server_certificate_facts`), if it could be fetched.
        ca_path: the site's ``root_certificates``.
        now: the site's clock (default: now), compared with a certificate's validity.
    """
    host = split_address(address)[0]
    now = now or dt.datetime.now(dt.timezone.utc)
    ca = f" ({ca_path})" if ca_path is not None else ""
    if cause.kind == HOSTNAME:
        listed = f"for {', '.join(facts.names)}" if facts and facts.names else "for another host name"
        what = "IP address" if _is_ip(host) else "host name"
        return (f"the server certificate is {listed}, not {host!r} (the {what} in server_address): dial a name "
                "it lists, or get one for this name from the coordinator (endofed certs --host)")  # fmt: skip
    if cause.kind == NOT_YET_VALID:
        since = f" (valid from {_when(facts.not_before)})" if facts else ""
        return (f"the server certificate is not valid yet{since}; this site's clock says {_when(now)}: "
                "is it behind? (set the clock, e.g. enable NTP)")  # fmt: skip
    if cause.kind == EXPIRED:
        until = f" on {_when(facts.not_after)}" if facts else ""
        return (f"the server certificate expired{until}; this site's clock says {_when(now)}: the coordinator "
                "must renew it ('endofed certs'), unless this clock is ahead")  # fmt: skip
    reason = openssl_reason(cause.detail)
    if cause.kind == UNKNOWN_CA:
        issuer = f" (issued by {facts.issuer!r})" if facts else ""
        return f"the server certificate{issuer} is not signed by the CA in root_certificates{ca}: {reason}"
    if cause.kind == BAD_CERTIFICATE:
        return f"the server certificate was refused: {reason}"
    if cause.kind == NOT_TLS:
        return f"{address} does not answer with TLS (wrong port, or not a TLS SuperLink): {reason}"
    if cause.kind == KEY_REFUSED:
        return (f"the SuperLink refused this site's key ({reason!r}): its public key is not registered there "
                "(the coordinator lists it in site_public_keys)")  # fmt: skip
    if cause.kind == NETWORK:
        return f"cannot reach the SuperLink ({cause.detail})"
    if cause.kind == PORT_IN_USE:
        return f"the SuperNode's local port was taken ({cause.detail})"
    return f"the SuperNode stopped: {cause.detail or 'it logged no reason'}"


CERTIFICATE_KINDS = frozenset({HOSTNAME, NOT_YET_VALID, EXPIRED, UNKNOWN_CA})  # worth fetching the certificate for

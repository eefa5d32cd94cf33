"""The SuperNode failure classifier over real log lines, the messages it leads to, and when restarting stops.

Every fixture below is what ``flower-supernode`` (flwr 1.42.0, OpenSSL 3, Python 3.11) wrote to its log on this
machine when it was started against a real SuperLink on 127.0.0.1 with the credentials described (colour codes
as written; uvicorn's start-up lines and the SuperExec's lines after the exit kept where they occurred).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from endofed.launch.diagnose import (
    EXPIRED,
    GIVE_UP_AFTER,
    HOSTNAME,
    KEY_REFUSED,
    NETWORK,
    NOT_TLS,
    NOT_YET_VALID,
    PORT_IN_USE,
    UNKNOWN,
    UNKNOWN_CA,
    Cause,
    CertFacts,
    classify_supernode_log,
    describe,
    give_up_reason,
    log_size,
    openssl_reason,
    read_log_since,
    should_give_up,
    split_address,
)

INFO, WARN, ERROR = "\x1b[92mINFO \x1b[0m:      ", "\x1b[93mWARNING \x1b[0m:   ", "\x1b[91mERROR \x1b[0m:     "
START = f"""{INFO}Starting Flower SuperNode
INFO:     Started server process [17271]
INFO:     Waiting for application startup.
{INFO}FastAPI lifespan: startup
INFO:     Application startup complete.
INFO:     Uvicorn running on http://127.0.0.1:41177 (Press CTRL+C to quit)
"""
END = f"""The SuperNode could not establish a connection to the SuperLink.

For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/305.html>
INFO:     Shutting down
INFO:     Waiting for application shutdown.
{INFO}FastAPI lifespan: shutdown
INFO:     Application shutdown complete.
INFO:     Finished server process [17271]
{INFO}Starting Flower SuperExec
{WARN}Connection attempt failed, retrying in 0.15 seconds
{INFO}SuperExec terminated gracefully.
"""


def tls_failure(reason: str) -> str:
    """The log of a SuperNode whose TLS handshake failed: Flower gives up at once (no retries)."""
    return (
        f"{START}{ERROR}SSL/TLS handshake error detected.\n{ERROR}Exit Code: 305\n"
        f"Failed to initialize the connection to the SuperLink.\n{reason}\n{END}"
    )


# The server certificate lists only elsewhere.example; the site dials 127.0.0.1 / localhost.
IP_MISMATCH = tls_failure(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch, certificate is not valid for "
    "'127.0.0.1'. (_ssl.c:1006)"
)
DNS_MISMATCH = tls_failure(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for "
    "'localhost'. (_ssl.c:1006)"
)
# Server certificate valid from now-60 to now-2 days / from now+5 days (a site clock that is behind).
EXPIRED_LOG = tls_failure(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:1006)"
)
NOT_YET_VALID_LOG = tls_failure(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate is not yet valid (_ssl.c:1006)"
)
# root_certificates: another federation's CA / the SuperLink presents a self-signed certificate.
OTHER_CA = tls_failure(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)"
)
SELF_SIGNED = tls_failure(
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"
)
# A plain HTTP server on the port the site dials.
PLAIN_HTTP = tls_failure("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
# A site key the SuperLink does not have registered (flower-supernode exits 1).
KEY_NOT_REGISTERED = (
    f"{START}{ERROR}Exit Code: 305\nFailed to initialize the connection to the SuperLink.\n"
    f"[code: 2004] Failed to activate SuperNode.\n{END}"
)


def gave_up(reason: str) -> str:
    """The log of a SuperNode started with --max-retries 2 that could not connect."""
    return (
        f"{START}{WARN}Connection attempt failed, retrying in 0.83 seconds\n{INFO}Starting Flower SuperExec\n"
        f"{WARN}Connection attempt failed, retrying in 1.02 seconds\n"
        f"{WARN}Giving up reconnection after 1.86 seconds and 3 tries.\n{ERROR}Exit Code: 305\n"
        f"Failed to initialize the connection to the SuperLink.\n{reason}\n{END}"
    )


REFUSED = gave_up("[Errno 111] Connection refused")  # nothing listens on the port
NO_SUCH_HOST = gave_up("[Errno -2] Name or service not known")  # server_address no-such-host.invalid:PORT
# The runtime port given with --port is taken (uvicorn fails to bind; Flower raises).
PORT_TAKEN = f"""{INFO}Starting Flower SuperNode
INFO:     Started server process [18279]
INFO:     Waiting for application startup.
{INFO}FastAPI lifespan: startup
INFO:     Application startup complete.
ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 55575): address already in use
INFO:     Waiting for application shutdown.
{INFO}FastAPI lifespan: shutdown
INFO:     Application shutdown complete.
Traceback (most recent call last):
  File "/work/main/.venv/bin/flower-supernode", line 8, in <module>
    sys.exit(flower_supernode())
             ^^^^^^^^^^^^^^^^^^
  File ".../flwr/supernode/cli/flower_supernode.py", line 248, in _start_supernode_http_api
    raise RuntimeError("SuperNode Runtime HTTP API failed to start.")
RuntimeError: SuperNode Runtime HTTP API failed to start.
"""
# --node-config 'a=[1,' (not a TOML value); the site's key file missing: tracebacks, no known cause.
BAD_NODE_CONFIG = f"""{INFO}Starting Flower SuperNode
Traceback (most recent call last):
  File ".../flwr/common/config.py", line 234, in parse_config_args
    raise click.ClickException(
click.exceptions.ClickException: The provided configuration string is in an invalid format. The correct format \
should be, e.g., 'key1=123 key2=false key3="string"', where values must be of type bool, int, string, or float. \
Ensure proper formatting with space-separated key-value pairs.
"""
MISSING_KEY = f"""{INFO}Starting Flower SuperNode
  File "/root/.pyenv/versions/3.11.7/lib/python3.11/pathlib.py", line 1044, in open
    return io.open(self, mode, buffering, encoding, errors, newline)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
FileNotFoundError: [Errno 2] No such file or directory: '/tmp/probe/nokey'
"""


@pytest.mark.parametrize(
    ("log", "kind", "quoted"),
    [
        (IP_MISMATCH, HOSTNAME, "IP address mismatch"),
        (DNS_MISMATCH, HOSTNAME, "Hostname mismatch"),
        (EXPIRED_LOG, EXPIRED, "certificate has expired"),
        (NOT_YET_VALID_LOG, NOT_YET_VALID, "not yet valid"),
        (OTHER_CA, UNKNOWN_CA, "unable to get local issuer certificate"),
        (SELF_SIGNED, UNKNOWN_CA, "self-signed certificate"),
        (PLAIN_HTTP, NOT_TLS, "wrong version number"),
        (KEY_NOT_REGISTERED, KEY_REFUSED, "[code: 2004] Failed to activate SuperNode."),
        (REFUSED, NETWORK, "[Errno 111] Connection refused"),
        (NO_SUCH_HOST, NETWORK, "Name or service not known"),
        (PORT_TAKEN, PORT_IN_USE, "address already in use"),
    ],
)
def test_each_real_failure_gets_its_cause_and_the_line_that_says_so(log, kind, quoted):
    cause = classify_supernode_log(log)
    assert cause.kind == kind
    assert quoted in cause.detail and "\x1b" not in cause.detail


def test_an_unknown_failure_quotes_its_last_meaningful_line_cut_to_200_characters():
    cause = classify_supernode_log(BAD_NODE_CONFIG)
    assert cause.kind == UNKNOWN
    assert cause.detail.startswith("click.exceptions.ClickException: The provided configuration string")
    assert len(cause.detail) == 200 and cause.detail.endswith("...")
    assert classify_supernode_log(MISSING_KEY) == Cause(
        UNKNOWN, "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/probe/nokey'"
    )
    intro = f"{ERROR}Exit Code: 300\nFailed to initialize the connection to the SuperLink.\nsomething new\n{END}"
    assert classify_supernode_log(intro) == Cause(UNKNOWN, "something new")  # the line Flower names as the cause
    assert classify_supernode_log(START + END) == Cause(UNKNOWN, "")  # only boilerplate: nothing to quote


FACTS = CertFacts(
    names=("elsewhere.example",),
    not_before=dt.datetime(2026, 12, 6, 21, 0, tzinfo=dt.timezone.utc),
    not_after=dt.datetime(2027, 1, 30, 8, 15, tzinfo=dt.timezone.utc),
    issuer="CN=endofed CA",
)
NOW = dt.datetime(2026, 12, 1, 21, 5, tzinfo=dt.timezone.utc)


def test_messages_name_what_the_certificate_says_and_what_to_do():
    def text(log: str, facts: CertFacts | None = FACTS) -> str:
        return describe(classify_supernode_log(log), "127.0.0.1:9092", facts, Path("/site/ca.crt"), NOW)

    assert text(IP_MISMATCH).startswith(
        "the server certificate is for elsewhere.example, not '127.0.0.1' (the IP address in server_address)"
    )
    assert "is for another host name, not '127.0.0.1'" in text(IP_MISMATCH, None)
    assert text(NOT_YET_VALID_LOG) == (
        "the server certificate is not valid yet (valid from 2026-12-06 21:00 UTC); this site's clock says "
        "2026-12-01 21:05 UTC: is it behind? (set the clock, e.g. enable NTP)"
    )
    assert "expired on 2027-01-30 08:15 UTC; this site's clock says 2026-12-01 21:05 UTC" in text(EXPIRED_LOG)
    assert text(OTHER_CA) == (
        "the server certificate (issued by 'CN=endofed CA') is not signed by the CA in root_certificates "
        "(/site/ca.crt): unable to get local issuer certificate"
    )
    assert text(KEY_NOT_REGISTERED).startswith(
        "the SuperLink refused this site's key ('Failed to activate SuperNode.'): its public key is not registered"
    )
    assert text(REFUSED) == "cannot reach the SuperLink ([Errno 111] Connection refused)"
    assert text(PLAIN_HTTP).endswith(
        "does not answer with TLS (wrong port, or not a TLS SuperLink): wrong version number"
    )
    assert text(START + END) == "the SuperNode stopped: it logged no reason"
    host_message = describe(Cause(HOSTNAME, "x"), "link.example:443", None)
    assert "not 'link.example' (the host name in server_address)" in host_message


def test_openssl_and_flower_codes_are_dropped_from_the_reason():
    assert openssl_reason(classify_supernode_log(SELF_SIGNED).detail) == "self-signed certificate"
    assert openssl_reason(classify_supernode_log(KEY_NOT_REGISTERED).detail) == "Failed to activate SuperNode."
    assert openssl_reason("[Errno 111] Connection refused") == "[Errno 111] Connection refused"


def test_restarting_stops_after_identical_certificate_failures_but_never_for_an_outage():
    bad_cert = Cause(HOSTNAME, "IP address mismatch")
    refused = Cause(NETWORK, "[Errno 111] Connection refused")
    assert not should_give_up([])
    assert not should_give_up([bad_cert, bad_cert])
    assert should_give_up([bad_cert, bad_cert, bad_cert])
    assert not should_give_up([bad_cert, refused, bad_cert, bad_cert])  # in a row only
    assert not should_give_up([bad_cert, bad_cert, Cause(HOSTNAME, "Hostname mismatch")])  # identical only
    assert not should_give_up([refused] * 1000)
    assert not should_give_up([Cause(UNKNOWN, "x")] * 1000)
    key = Cause(KEY_REFUSED, "[code: 2004]")
    assert GIVE_UP_AFTER[KEY_REFUSED] == 10  # the operator may still register the key
    assert not should_give_up([key] * 9) and should_give_up([key] * 10)
    assert should_give_up([refused, refused], limits={NETWORK: 2})


def test_the_reason_to_stop_names_the_repeats_or_the_attempts():
    bad_cert, refused = Cause(EXPIRED, "certificate has expired"), Cause(NETWORK, "Connection refused")
    assert give_up_reason([bad_cert] * 3) == "3 identical failures, giving up"
    assert give_up_reason([bad_cert] * 2) is None
    assert give_up_reason([refused] * 50) is None
    assert give_up_reason([refused] * 3, retries=2) == "3 attempts, giving up"  # retries=2: three attempts in all
    assert give_up_reason([refused] * 2, retries=2) is None
    assert give_up_reason([bad_cert] * 3, retries=5) == "3 identical failures, giving up"


def test_only_the_part_of_the_log_an_attempt_wrote_is_read(tmp_path):
    log = tmp_path / "supernode.log"
    assert log_size(log) == 0 and read_log_since(log, 0) == ""
    log.write_text(KEY_NOT_REGISTERED)
    offset = log_size(log)
    with log.open("a") as handle:
        handle.write(IP_MISMATCH)
    assert classify_supernode_log(read_log_since(log, offset)).kind == HOSTNAME
    assert classify_supernode_log(read_log_since(log, 0)).kind == HOSTNAME  # the whole log: first match wins
    assert read_log_since(log, offset + 10**6) == log.read_text()  # the file shrank (rotated): all of it
    assert read_log_since(log, 0, max_bytes=10) == log.read_text()[-10:]


def test_addresses_split_into_host_and_port():
    assert split_address("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert split_address("[::1]:8000") == ("::1", 8000)
    assert split_address("link.example:443") == ("link.example", 443)

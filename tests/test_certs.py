from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from endofed.cert_checks import load_certificate, verify_server_cert, verify_site_key
from endofed.certs import (
    Credentials,
    create_ca,
    create_credentials,
    create_server_cert,
    create_site_keys,
    parse_host,
    planned_files,
)
from endofed.cli import certs_cmd
from endofed.cli.common import run_command
from endofed.errors import EndofedError

HOSTS = ["link.hospital.example", "10.1.2.3"]
SITES = ["site_a", "site-b"]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    """One full credential set, written once (RSA key generation takes a fraction of a second)."""
    return create_credentials(tmp_path_factory.mktemp("certs") / "out", HOSTS, SITES, days=30)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_layout_and_permissions(creds):
    out = creds.ca.cert_path.parent
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "ca.crt",
        "ca.key",
        "server.pem",
        "server.key",
        "keys/site_a",
        "keys/site_a.pub",
        "keys/site-b",
        "keys/site-b.pub",
    }
    for private in ("ca.key", "server.key", "keys/site_a", "keys/site-b"):
        assert _mode(out / private) == 0o600, private
    for public in ("ca.crt", "server.pem", "keys/site_a.pub"):
        assert _mode(out / public) == 0o644 & ~_umask(), public
    assert _mode(out / "keys") == 0o700 & ~_umask()
    assert {p.relative_to(out).as_posix() for p in planned_files(out, SITES)} == names


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_private_keys_are_0600_from_creation_even_with_a_permissive_umask(tmp_path):
    previous = os.umask(0)
    try:
        (site,) = create_site_keys(tmp_path, ["open"])
    finally:
        os.umask(previous)
    assert _mode(site.private_path) == 0o600
    assert _mode(site.public_path) == 0o644


def test_server_cert_verifies_against_the_ca_and_has_the_sans(creds):
    ca_crt, server_pem = creds.ca.cert_path, creds.server.cert_path
    for host in [*HOSTS, "127.0.0.1", "localhost", "LINK.hospital.example."]:
        verify_server_cert(ca_crt, server_pem, host)
    server = load_certificate(server_pem)
    sans = _sans(server)
    assert sans.get_values_for_type(x509.DNSName) == ["link.hospital.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    assert creds.server.hosts == ("link.hospital.example", "10.1.2.3", "127.0.0.1", "localhost")
    usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca = load_certificate(ca_crt)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=6)


def test_server_key_matches_the_certificate(creds):
    key = serialization.load_pem_private_key(creds.server.key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key() == load_certificate(creds.server.cert_path).public_key()


@pytest.mark.parametrize(
    ("host", "message"),
    [("other.example", "not valid for host 'other.example'"), ("10.1.2.4", "not valid for host '10.1.2.4'")],
)
def test_verify_rejects_a_host_without_a_san(creds, host, message):
    with pytest.raises(EndofedError, match=message):
        verify_server_cert(creds.ca.cert_path, creds.server.cert_path, host)


def test_verify_rejects_another_ca_and_an_expired_moment(creds, tmp_path):
    other = create_ca(tmp_path, "other CA", 30)
    with pytest.raises(EndofedError, match="is not signed by the CA"):
        verify_server_cert(other.cert_path, creds.server.cert_path, "localhost")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31)
    with pytest.raises(EndofedError, match="is valid from"):
        verify_server_cert(creds.ca.cert_path, creds.server.cert_path, "localhost", at=later)
    with pytest.raises(EndofedError, match="cannot read a PEM certificate"):
        verify_server_cert(creds.ca.key_path, creds.server.cert_path, "localhost")


def test_site_keys_are_p384_openssh_pairs(creds):
    for site in creds.sites:
        private_bytes, public_bytes = site.private_path.read_bytes(), site.public_path.read_bytes()
        assert private_bytes.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        assert public_bytes.startswith(b"ecdsa-sha2-nistp384 ")
        private = serialization.load_ssh_private_key(private_bytes, password=None)  # as flower-supernode does
        public = serialization.load_ssh_public_key(public_bytes)  # as flwr supernode register does
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey)
        assert private.curve.name == public.curve.name == "secp384r1"
        assert private.public_key() == public
        verify_site_key(site.private_path, site.public_path)
    a, b = creds.sites
    assert serialization.load_ssh_public_key(a.public_path.read_bytes()) != serialization.load_ssh_public_key(
        b.public_path.read_bytes()
    )


def test_verify_site_key_catches_a_readable_key_and_a_wrong_pair(creds, tmp_path):
    a, b = creds.sites
    with pytest.raises(EndofedError, match="does not belong to the private key"):
        verify_site_key(a.private_path, b.public_path)
    copy = tmp_path / "loose"
    copy.write_bytes(a.private_path.read_bytes())
    copy.chmod(0o644)
    with pytest.raises(EndofedError, match="has permissions 644"):
        verify_site_key(copy)


def test_refuses_to_overwrite(creds):
    out = creds.ca.cert_path.parent
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(EndofedError, match=r"ca\.crt already exists"):
        create_credentials(out, HOSTS, ["new_site"])
    with pytest.raises(EndofedError, match=r"server\.pem already exists"):
        create_server_cert(creds.ca, out, HOSTS, 30)
    with pytest.raises(EndofedError, match=r"keys/site_a already exists"):
        create_site_keys(out, ["site_c", "site_a"])
    assert not (out / "keys" / "site_c").exists()  # checked before writing any key
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_partial_layout_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "site_b.pub").write_text("old")
    with pytest.raises(EndofedError, match=r"site_b\.pub already exists"):
        create_credentials(tmp_path, HOSTS, ["site_a", "site_b"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keys", "site_b.pub"]


@pytest.mark.parametrize(
    ("hosts", "sites", "days", "message"),
    [
        (HOSTS, [], 30, "at least one site id"),
        (HOSTS, ["a/b"], 30, "site id must be 1-64 letters"),
        (HOSTS, ["a.pub"], 30, "site id must be 1-64 letters"),
        (HOSTS, ["a", "b", "a"], 30, "repeated: a"),
        (["link.example:8000"], SITES, 30, "'link.example:8000' is neither an IP address nor a DNS name"),
        (["https://link.example"], SITES, 30, "neither an IP address nor a DNS name"),
        (["*.example.org"], SITES, 30, "neither an IP address nor a DNS name"),
        (["300.1.2.3"], SITES, 30, "neither an IP address nor a DNS name"),
        (["bad_name.example"], SITES, 30, "neither an IP address nor a DNS name"),
        ([""], SITES, 30, "neither an IP address nor a DNS name"),
        (["0.0.0.0"], SITES, 30, "is a bind address"),
        (HOSTS, SITES, 0, "validity must be 1 to 36500 days, got 0"),
        (HOSTS, SITES, 99_999_999, "validity must be 1 to 36500 days, got 99999999"),  # overflowed the date before
        (["hôpital.example"], SITES, 30, r"neither an IP address nor a DNS name .*in its ASCII xn-- form"),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_written(tmp_path, hosts, sites, days, message):
    with pytest.raises(EndofedError, match=message):
        create_credentials(tmp_path / "out", hosts, sites, days=days)
    assert not (tmp_path / "out").exists()


def test_parse_host():
    assert parse_host("::1") == x509.IPAddress(ipaddress.ip_address("::1"))
    assert parse_host("Link.Example.") == x509.DNSName("link.example")
    assert parse_host("superlink") == x509.DNSName("superlink")


def _serve_once(listener: socket.socket, context: ssl.SSLContext, errors: list[BaseException]) -> None:
    try:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(5)[::-1])
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)


def _handshake(creds: Credentials, server_hostname: str) -> bytes:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(creds.server.cert_path, creds.server.key_path)
    client_ctx = ssl.create_default_context(cafile=str(creds.ca.cert_path))  # verifies chain and host name
    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(4)
        thread = threading.Thread(target=_serve_once, args=(listener, server_ctx, errors), daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=4) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                    tls.sendall(b"hello")
                    return tls.recv(5)
        finally:
            thread.join(timeout=4)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_real_tls_handshake_on_loopback(creds, name):
    assert _handshake(creds, name) == b"olleh"


@pytest.mark.timeout(10)
def test_tls_handshake_fails_for_a_name_not_in_the_certificate(creds):
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|doesn't match"):
        _handshake(creds, "evil.example")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="endofed")
    certs_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return run_command(lambda: args.handler(args))


def test_cli_writes_and_explains(tmp_path, capsys):
    out = tmp_path / "creds"
    argv = ["certs", "--out", str(out), "--host", "10.9.8.7", "--site", "north", "--site", "south", "--days", "90"]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    assert "SuperLink certificate for 10.9.8.7, 127.0.0.1, localhost" in printed
    assert f"flwr supernode register {out.resolve()}/keys/north.pub" in printed
    assert "--ssl-certfile" in printed and "--enable-supernode-auth" in printed
    assert "private_key: keys/<site>" in printed
    verify_server_cert(out / "ca.crt", out / "server.pem", "10.9.8.7")
    verify_site_key(out / "keys" / "south", out / "keys" / "south.pub")
    assert _cli(argv) == 1  # a second run refuses, with one line on stderr
    err = capsys.readouterr().err
    assert err.strip() == f"endofed: error: {out / 'ca.crt'} already exists; refusing to overwrite credentials " + (
        "(choose another --out)"
    )


def test_cli_requires_a_site_and_reports_a_bad_host(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _cli(["certs", "--out", str(tmp_path), "--host", "10.0.0.1"])
    assert info.value.code == 2 and "--site" in capsys.readouterr().err
    assert _cli(["certs", "--out", str(tmp_path / "x"), "--host", "a b", "--site", "s"]) == 1
    assert "host 'a b' is neither an IP address nor a DNS name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_server_key_must_be_the_certificates_own_private_key(creds, tmp_path):
    from endofed.cert_checks import verify_server_key

    server = creds.server
    verify_server_key(server.cert_path, server.key_path)
    with pytest.raises(EndofedError, match=r"cannot read an unencrypted PEM private key from .*server.pem"):
        verify_server_key(server.cert_path, server.cert_path)  # the certificate given as the key
    other = create_credentials(tmp_path / "other", HOSTS, SITES, days=30).server
    with pytest.raises(EndofedError, match=r"other/server.key is not the private key of the certificate"):
        verify_server_key(server.cert_path, other.key_path)


def test_registered_site_keys_must_be_openssh_p384_public_keys(creds, tmp_path):
    from endofed.cert_checks import verify_site_public_key

    site = creds.sites[0]
    verify_site_public_key(site.public_path)
    with pytest.raises(EndofedError, match=r"is a private key: register the site's .pub file"):
        verify_site_public_key(site.private_path)
    rsa_pub = rsa.generate_private_key(65537, 2048).public_key()
    (tmp_path / "rsa.pub").write_bytes(
        rsa_pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    with pytest.raises(EndofedError, match=r"rsa.pub must be an ECDSA P-384 key, got .*RSAPublicKey"):
        verify_site_public_key(tmp_path / "rsa.pub")
    (tmp_path / "junk.pub").write_text("ssh-ed25519 not-base64!\n")
    with pytest.raises(EndofedError, match=r"cannot read an OpenSSH public key from .*junk.pub"):
        verify_site_public_key(tmp_path / "junk.pub")

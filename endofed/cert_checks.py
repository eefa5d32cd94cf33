"""Checks of deployment credentials before Flower uses them: one clear line instead of a TLS failure later.

``endofed-server`` checks its CA and SuperLink certificate (chain, CA flag, validity, serverAuth, a SAN for the
host sites dial), that its private key belongs to that certificate, and that every registered site key is an
OpenSSH ECDSA P-384 public key; ``endofed-client`` checks the CA it trusts and its SuperNode key (OpenSSH
ECDSA P-384, mode 0600, matching the registered public key). :mod:`endofed.certs` makes the credentials.
"""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from endofed.certs import parse_host, utcnow
from endofed.errors import EndofedError


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM certificate.

    Raises:
        EndofedError: naming the file if it is missing or not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise EndofedError(f"cannot read a PEM certificate from {path}: {exc}") from exc


def _check_validity(cert: x509.Certificate, path: Path, at: dt.datetime) -> None:
    """Raise unless ``at`` lies within the certificate's validity period."""
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise EndofedError(
            f"{path} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d},"
            f" not at {at:%Y-%m-%d %H:%M} UTC"
        )


def verify_server_cert(ca_crt: Path, server_pem: Path, host: str, at: dt.datetime | None = None) -> None:
    """Check that a SuperLink certificate will be accepted by sites dialling ``host``.

    Args:
        ca_crt: the CA certificate the sites trust.
        server_pem: the SuperLink certificate.
        host: the IP address or DNS name sites dial.
        at: the moment to check (default now, UTC).

    Raises:
        EndofedError: one line naming the problem: not signed by the CA, the CA is not a CA, outside its
            validity, no serverAuth usage, or ``host`` not among its SANs.
    """
    ca, server = load_certificate(ca_crt), load_certificate(server_pem)
    when = at or utcnow()
    try:
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise EndofedError(f"{server_pem} is not signed by the CA in {ca_crt}") from exc
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise EndofedError(f"{ca_crt} or {server_pem} lacks a required extension: {exc}") from exc
    if not is_ca:
        raise EndofedError(f"{ca_crt} is not a CA certificate")
    _check_validity(ca, Path(ca_crt), when)
    _check_validity(server, Path(server_pem), when)
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise EndofedError(f"{server_pem} is not allowed for TLS servers (no serverAuth extended key usage)")
    if parse_host(host) not in list(sans):
        listed = ", ".join(str(name.value) for name in sans)
        raise EndofedError(f"{server_pem} is not valid for host {host!r}; it covers: {listed}")


def verify_ca_cert(ca_crt: Path, at: dt.datetime | None = None) -> None:
    """Check the CA certificate a site trusts: readable, a CA, and valid now (or at ``at``).

    Raises:
        EndofedError: one line naming the file and the problem.
    """
    ca = load_certificate(ca_crt)
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise EndofedError(f"{ca_crt} is not a CA certificate (give the federation's ca.crt)")
    _check_validity(ca, Path(ca_crt), at or utcnow())


def verify_site_key(private_path: Path, public_path: Path | None = None) -> None:
    """Check a site's SuperNode key before ``flower-supernode`` uses it.

    Args:
        private_path: ``keys/<site>``.
        public_path: optionally ``keys/<site>.pub``, which must belong to the private key.

    Raises:
        EndofedError: if the private key is readable by others, not an OpenSSH ECDSA P-384 key, or does
            not match the public key.
    """
    path = Path(private_path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise EndofedError(f"cannot read an OpenSSH private key from {path}: {exc}") from exc
    if mode & 0o077:
        raise EndofedError(f"{path} has permissions {mode:o}; a private key must be 600 (chmod 600 {path})")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise EndofedError(f"{path} must be an ECDSA P-384 key, got {type(key).__name__}")
    if public_path is None:
        return
    try:
        public = serialization.load_ssh_public_key(Path(public_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise EndofedError(f"cannot read an OpenSSH public key from {public_path}: {exc}") from exc
    if public != key.public_key():
        raise EndofedError(f"{public_path} does not belong to the private key {path}")


def verify_server_key(server_pem: Path, server_key: Path) -> None:
    """Check that the SuperLink's private key is a readable PEM key belonging to its certificate.

    Raises:
        EndofedError: the key cannot be read (e.g. the certificate given as the key) or is another key's.
    """
    try:
        key = serialization.load_pem_private_key(Path(server_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EndofedError(f"cannot read an unencrypted PEM private key from {server_key}: {exc}") from exc
    if key.public_key() != load_certificate(server_pem).public_key():
        raise EndofedError(f"{server_key} is not the private key of the certificate {server_pem}")


def verify_site_public_key(public_path: Path) -> None:
    """Check a site's registered key: an OpenSSH ECDSA P-384 public key (``keys/<site>.pub``, not the private key).

    Raises:
        EndofedError: naming the file and why it cannot be registered.
    """
    data = Path(public_path).read_bytes()
    if b"PRIVATE KEY" in data:
        raise EndofedError(f"{public_path} is a private key: register the site's .pub file, and keep this one secret")
    try:
        key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError) as exc:
        raise EndofedError(f"cannot read an OpenSSH public key from {public_path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise EndofedError(f"{public_path} must be an ECDSA P-384 key, got {type(key).__name__}")

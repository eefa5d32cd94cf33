"""Deployment credentials: a private CA, the SuperLink's TLS certificate and one SuperNode key pair per site.

Layout written under ``<out>`` (files are never overwritten; private keys are created with mode 0600)::

    ca.crt        CA certificate (RSA-3072): every site and the operator's ``flwr`` CLI trust it
    ca.key        CA private key: stays with the operator, ideally offline
    server.pem    SuperLink certificate: serverAuth, a SAN for every host sites dial (+ 127.0.0.1, localhost)
    server.key    SuperLink private key
    keys/<site>      the site's ECDSA P-384 private key, OpenSSH format (``--auth-supernode-private-key``)
    keys/<site>.pub  its OpenSSH public key (``flwr supernode register keys/<site>.pub``)

Flower uses them as ``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile
server.key --enable-supernode-auth`` and ``flower-supernode --root-certificates ca.crt
--auth-supernode-private-key keys/<site>``. TLS here is server-authenticated only; sites prove who they are
with their registered key. Checking them before use (expiry, SANs, chain, key permissions) is
:mod:`endofed.cert_checks`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from endofed.errors import EndofedError

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
KEYS_DIR = "keys"
DEFAULT_DAYS = 825  # the longest server-certificate lifetime browsers and Apple platforms still accept
DEFAULT_CA_NAME = "endofed federation CA"
ALWAYS_HOSTS = ("127.0.0.1", "localhost")  # local checks and a SuperLink reached through a local proxy
RSA_BITS = 3072
PRIVATE_MODE, PUBLIC_MODE = 0o600, 0o644
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates are valid slightly before "now" for skewed clocks
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SITE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class CertificateAuthority:
    """The federation's private CA (certificate and key in memory, and where they were written)."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class ServerCertificate:
    """The SuperLink's certificate, the files written and the hosts it is valid for."""

    cert: x509.Certificate
    cert_path: Path
    key_path: Path
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class SiteKey:
    """One site's SuperNode authentication key pair on disk."""

    site_id: str
    private_path: Path
    public_path: Path


@dataclass(frozen=True)
class Credentials:
    """Everything :func:`create_credentials` wrote."""

    ca: CertificateAuthority
    server: ServerCertificate
    sites: tuple[SiteKey, ...]


def _ip_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, or ``None`` if it is not one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_host(host: str) -> x509.GeneralName:
    """The SAN entry for one host: an IP address or a DNS name that sites dial.

    Args:
        host: e.g. ``"10.0.0.5"``, ``"::1"`` or ``"link.hospital-a.example"`` (no port, scheme or wildcard).

    Returns:
        ``x509.IPAddress`` or ``x509.DNSName`` (lower-case, trailing dot removed).

    Raises:
        EndofedError: naming the host and why it cannot be used.
    """
    address = _ip_or_none(host)
    if address is not None:
        if address.is_unspecified:
            raise EndofedError(f"host {host!r} is a bind address, not one sites can dial; give the server's IP or name")
        return x509.IPAddress(address)
    name = host.lower().removesuffix(".")
    labels = name.split(".")
    valid = 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in labels) and not labels[-1].isdigit()
    if not valid:
        hint = " (give an international name in its ASCII xn-- form)" if not host.isascii() else ""
        raise EndofedError(
            f"host {host!r} is neither an IP address nor a DNS name (no port, scheme, path or wildcard){hint}"
        )
    return x509.DNSName(name)


def server_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Validated, de-duplicated SAN entries: the given hosts first, then :data:`ALWAYS_HOSTS`."""
    names: list[x509.GeneralName] = []
    for host in [*hosts, *ALWAYS_HOSTS]:
        name = parse_host(host)
        if name not in names:
            names.append(name)
    return names


def check_site_ids(site_ids: Sequence[str]) -> list[str]:
    """Validate site ids (they become file names under ``keys/``).

    Raises:
        EndofedError: if there are none, one is not 1-64 letters/digits/'-'/'_', or one is repeated.
    """
    if not site_ids:
        raise EndofedError("give at least one site id (each site gets its own SuperNode key pair)")
    for site_id in site_ids:
        if not _SITE_ID.match(site_id):
            raise EndofedError(f"site id must be 1-64 letters, digits, '-' or '_', got {site_id!r}")
    repeated = sorted({s for s in site_ids if site_ids.count(s) > 1})
    if repeated:
        raise EndofedError(f"site ids must be unique, repeated: {', '.join(repeated)}")
    return list(site_ids)


MAX_DAYS = 36500  # a hundred years; X.509 dates end in 9999 and beyond that the date library overflows


def _check_days(days: int) -> None:
    """Validity must be a positive number of days, at most :data:`MAX_DAYS`."""
    if not 1 <= days <= MAX_DAYS:
        raise EndofedError(f"validity must be 1 to {MAX_DAYS} days, got {days!r}")


def _site_paths(out_dir: Path, site_id: str) -> tuple[Path, Path]:
    """``(keys/<site>, keys/<site>.pub)`` under ``out_dir``."""
    private = Path(out_dir) / KEYS_DIR / site_id
    return private, private.with_name(site_id + ".pub")


def planned_files(out_dir: Path, site_ids: Sequence[str]) -> list[Path]:
    """Every file :func:`create_credentials` would write."""
    out = Path(out_dir)
    files = [out / CA_CERT, out / CA_KEY, out / SERVER_CERT, out / SERVER_KEY]
    for site_id in site_ids:
        files.extend(_site_paths(out, site_id))
    return files


def refuse_existing(paths: Sequence[Path]) -> None:
    """Raise ``EndofedError`` naming the first path that already exists (nothing is ever overwritten)."""
    for path in paths:
        if path.exists() or path.is_symlink():
            raise EndofedError(f"{path} already exists; refusing to overwrite credentials (choose another --out)")


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with permission ``mode`` from the start and write ``data``; never overwrites.

    The mode is given to ``os.open`` (with ``O_EXCL``), so a private key is never readable by others,
    not even for a moment.

    Raises:
        EndofedError: if the file already exists.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise EndofedError(f"{path} already exists; refusing to overwrite credentials") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    """An unencrypted PKCS#8 PEM private key (what uvicorn/OpenSSL load for the SuperLink)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def create_ca(out_dir: Path, common_name: str = DEFAULT_CA_NAME, days: int = DEFAULT_DAYS) -> CertificateAuthority:
    """Create a self-signed CA and write ``ca.crt`` and ``ca.key`` (0600) into ``out_dir``.

    Args:
        out_dir: destination folder (created if missing).
        common_name: the CA's subject name, 1-64 characters.
        days: validity in days.

    Returns:
        The CA, for :func:`create_server_cert`.

    Raises:
        EndofedError: on a bad name or validity, or if either file exists.
    """
    _check_days(days)
    if not 1 <= len(common_name) <= 64:
        raise EndofedError(f"CA common name must be 1-64 characters, got {common_name!r}")
    out = Path(out_dir)
    refuse_existing([out / CA_CERT, out / CA_KEY])
    out.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = utcnow()
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # keyCertSign, cRLSign
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_new_file(out / CA_KEY, _pem_key(key), PRIVATE_MODE)
    write_new_file(out / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return CertificateAuthority(cert, key, out / CA_CERT, out / CA_KEY)


def create_server_cert(
    ca: CertificateAuthority, out_dir: Path, hosts: Sequence[str], days: int = DEFAULT_DAYS
) -> ServerCertificate:
    """Issue the SuperLink certificate and write ``server.pem`` and ``server.key`` (0600) into ``out_dir``.

    Args:
        ca: the CA that signs it.
        out_dir: destination folder (created if missing).
        hosts: IP addresses and DNS names sites dial; ``127.0.0.1`` and ``localhost`` are always added.
        days: validity in days (never beyond the CA's own expiry).

    Returns:
        The certificate and its files.

    Raises:
        EndofedError: on a bad host or validity, or if either file exists.
    """
    _check_days(days)
    names = server_hosts(hosts)
    out = Path(out_dir)
    refuse_existing([out / SERVER_CERT, out / SERVER_KEY])
    out.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    now = utcnow()
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)  # digitalSig., keyEnc.
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "endofed SuperLink")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    write_new_file(out / SERVER_KEY, _pem_key(key), PRIVATE_MODE)
    write_new_file(out / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return ServerCertificate(cert, out / SERVER_CERT, out / SERVER_KEY, tuple(str(n.value) for n in names))


def create_site_keys(out_dir: Path, site_ids: Sequence[str]) -> list[SiteKey]:
    """Write one ECDSA P-384 key pair per site: ``keys/<site>`` (OpenSSH private, 0600) and ``keys/<site>.pub``.

    Args:
        out_dir: destination folder; keys go to ``out_dir/keys`` (created with mode 0700 if missing).
        site_ids: unique site ids (see :func:`check_site_ids`).

    Returns:
        One :class:`SiteKey` per site, in the given order.

    Raises:
        EndofedError: on bad or repeated ids, or if any key file exists (checked before writing any).
    """
    ids = check_site_ids(site_ids)
    paths = [_site_paths(Path(out_dir), site_id) for site_id in ids]
    refuse_existing([path for pair in paths for path in pair])
    (Path(out_dir) / KEYS_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
    sites = []
    for site_id, (private_path, public_path) in zip(ids, paths, strict=True):
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        write_new_file(private_path, private, PRIVATE_MODE)
        write_new_file(public_path, public + f" endofed-site-{site_id}\n".encode(), PUBLIC_MODE)
        sites.append(SiteKey(site_id, private_path, public_path))
    return sites


def create_credentials(
    out_dir: Path,
    hosts: Sequence[str],
    site_ids: Sequence[str],
    days: int = DEFAULT_DAYS,
    ca_name: str = DEFAULT_CA_NAME,
) -> Credentials:
    """Create the whole layout (CA, server certificate, site keys), refusing before writing anything.

    Args:
        out_dir: destination folder.
        hosts: hosts for the server certificate's SANs (see :func:`create_server_cert`).
        site_ids: one key pair per site.
        days: validity of the CA and the server certificate.
        ca_name: the CA's common name.

    Returns:
        What was written.

    Raises:
        EndofedError: on any bad input or any existing file, before anything is generated or written.
    """
    _check_days(days)
    server_hosts(hosts)
    ids = check_site_ids(site_ids)
    refuse_existing(planned_files(Path(out_dir), ids))
    ca = create_ca(out_dir, ca_name, days)
    server = create_server_cert(ca, out_dir, hosts, days)
    return Credentials(ca, server, tuple(create_site_keys(out_dir, ids)))

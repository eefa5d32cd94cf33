"""The world of the bad-input tests: a private copy of a small generated site with real NIfTI files and real
certificates, and the one check every case must pass (one clear line, a non-zero exit, no traceback, the
site's source data byte for byte unchanged)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from endofed.certs import create_credentials
from endofed.synth.example import write_example_site
from tests.helpers import OVERRIDES, TINY

ROOT = Path(__file__).resolve().parents[1]
SETS = [arg for o in OVERRIDES for arg in ("--set", o)]


def make_pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated site (8 subjects, 6 labelled) and the federation's certificates."""
    root = tmp_path_factory.mktemp("pristine")
    write_example_site(root / "site", n_subjects=8, seed=5, labelled_fraction=0.75, in_plane_mm=1.5, site_id="h1")
    create_credentials(root / "certs", hosts=["127.0.0.1", "localhost"], site_ids=["h1"])
    return root


@dataclass
class World:
    """A private copy of the pristine site, with its site and server YAMLs."""

    root: Path

    @property
    def site_yaml(self) -> Path:
        return self.root / "site" / "site.yaml"

    @property
    def server_yaml(self) -> Path:
        return self.root / "server.yaml"

    def edit_site(self, **changes: object) -> None:
        data = yaml.safe_load(self.site_yaml.read_text()) | changes
        self.site_yaml.write_text(yaml.safe_dump(data))

    def source_digest(self) -> str:
        """SHA-256 over every source file (images and manifest), with names."""
        digest = hashlib.sha256()
        site = self.root / "site"
        for path in sorted([*(site / "data").rglob("*"), site / "manifest.csv"]):
            if path.is_file():
                digest.update(str(path.relative_to(site)).encode() + path.read_bytes())
        return digest.hexdigest()


def make_world(pristine: Path, tmp_path: Path) -> World:
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    w = World(tmp_path)
    certs = tmp_path / "certs"
    os.chmod(certs / "keys" / "h1", 0o600)  # copytree keeps modes; make sure
    w.edit_site(server_address="127.0.0.1:9", root_certificates=str(certs / "ca.crt"),
                private_key=str(certs / "keys" / "h1"))  # fmt: skip
    server = {"port": free_port(), "ca_certificate": str(certs / "ca.crt"),
              "server_certificate": str(certs / "server.pem"), "server_key": str(certs / "server.key"),
              "site_public_keys": [str(certs / "keys" / "h1.pub")], "experiment": TINY,
              "output_dir": str(tmp_path / "out"), "app_dir": str(ROOT)}  # fmt: skip
    w.server_yaml.write_text(yaml.safe_dump(server))
    return w


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(path_crt: Path, days_valid: tuple[int, int], ca: bool = True) -> None:
    """A self-signed certificate valid from ``now + days_valid[0]`` to ``now + days_valid[1]`` days."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stale CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days_valid[0]))
        .not_valid_after(now + dt.timedelta(days=days_valid[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    path_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


Setup = Callable[[World], tuple[Callable[[list[str]], int], list[str]]]


def assert_one_clear_line(case: str, setup: Setup, expected: str, world: World, capsys: pytest.CaptureFixture) -> None:
    """Run the command ``setup`` builds and check the outcome of a bad input."""
    main, argv = setup(world)
    capsys.readouterr()
    before = world.source_digest()
    try:
        code = main(argv)
    finally:
        blocker = getattr(world, "blocker", None)
        if blocker is not None:
            blocker.close()
    out = capsys.readouterr()
    text = out.out + out.err
    assert code != 0, text
    assert "Traceback" not in text
    errors = [line for line in out.err.splitlines() if line.startswith("endofed: error:")]
    assert any(re.search(expected, line) for line in text.splitlines()), f"{case}: expected {expected!r} in:\n{text}"
    assert len(errors) <= 1, errors  # a fatal error is one line (a data check may list each failed case)
    assert world.source_digest() == before, "the source data was modified"


def mount_tmpfs(folder: Path, size_kib: int, read_only: bool = False) -> Callable[[], None]:
    """Mount a small tmpfs on ``folder`` (a full disk or a read-only file system); returns the unmount.

    Skips the test where mounting is not permitted (not root, or no mount in the container): a full disk and a
    read-only file system cannot be had otherwise without faking the kernel's answer.
    """
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    return lambda: subprocess.run(["umount", "-l", str(folder)], check=False)

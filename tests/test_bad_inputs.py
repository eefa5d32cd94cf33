"""Bad inputs end to end, through the real commands: one clear line naming the cause, a non-zero exit, no
traceback, and the site's source data (images + manifest) byte for byte unchanged.

Each case starts from a fresh copy of a small generated site with real NIfTI files and real certificates,
breaks one thing, runs one command, and checks the outcome. The list is the catalogue quoted in the notes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from endofed.certs import create_credentials
from endofed.cli.client import main as client_main
from endofed.cli.main import main as endofed_main
from endofed.cli.server import main as server_main
from endofed.synth.example import write_example_site
from tests.helpers import OVERRIDES, TINY

ROOT = Path(__file__).resolve().parents[1]
SETS = [arg for o in OVERRIDES for arg in ("--set", o)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
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


@pytest.fixture
def world(pristine: Path, tmp_path: Path) -> World:
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    w = World(tmp_path)
    certs = tmp_path / "certs"
    os.chmod(certs / "keys" / "h1", 0o600)  # copytree keeps modes; make sure
    w.edit_site(server_address="127.0.0.1:9", root_certificates=str(certs / "ca.crt"),
                private_key=str(certs / "keys" / "h1"))  # fmt: skip
    server = {"port": _free_port(), "ca_certificate": str(certs / "ca.crt"),
              "server_certificate": str(certs / "server.pem"), "server_key": str(certs / "server.key"),
              "site_public_keys": [str(certs / "keys" / "h1.pub")], "experiment": TINY,
              "output_dir": str(tmp_path / "out"), "app_dir": str(ROOT)}  # fmt: skip
    w.server_yaml.write_text(yaml.safe_dump(server))
    return w


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _self_signed(path_crt: Path, days_valid: tuple[int, int], ca: bool = True) -> None:
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


# ---------------------------------------------------------------------------------------------- the cases
Setup = Callable[[World], tuple[Callable[[list[str]], int], list[str]]]


def corrupt_image(w: World):
    path = w.root / "site" / "data" / "sub-001" / "T2.nii.gz"
    path.write_bytes(path.read_bytes()[:200])  # truncated download
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS]


def not_an_image(w: World):
    (w.root / "site" / "data" / "sub-002" / "T1.nii.gz").write_bytes(gzip.compress(b"this is a PDF report"))
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS]


def mismatched_scans(w: World):
    path = w.root / "site" / "data" / "sub-003" / "T1.nii.gz"
    image = nib.load(path)
    affine = image.affine.copy()
    affine[:3, 3] += 5000.0  # the T1 of another exam, 5 m away: no overlap with the T2
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine, image.header), path)
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS]


def missing_file(w: World):
    (w.root / "site" / "data" / "sub-004" / "T2.nii.gz").unlink()
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS]


def manifest_without_t2_column(w: World):
    manifest = w.root / "site" / "manifest.csv"
    rows = [",".join(c for i, c in enumerate(line.split(",")) if i != 2) for line in manifest.read_text().splitlines()]
    manifest.write_text("\n".join(rows) + "\n")
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS]


def malformed_site_yaml(w: World):
    w.site_yaml.write_text("site_id: h1\ndata_root: [data\n")
    return endofed_main, ["data", "check", "--site", str(w.site_yaml)]


def misspelt_site_key(w: World):
    w.edit_site(manifset="manifest.csv")
    return endofed_main, ["data", "check", "--site", str(w.site_yaml)]


def work_dir_inside_data(w: World):
    w.edit_site(work_dir=str(w.root / "site" / "data" / "work"))
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS]


def _check(w: World, *extra: str):
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS, *extra]


def passport_onto_a_source_image(w: World):
    return _check(w, "--passport", str(w.root / "site" / "data" / "sub-001" / "T1.nii.gz"))


def passport_onto_the_manifest(w: World):
    return _check(w, "--passport", str(w.root / "site" / "manifest.csv"))


def passport_into_an_image_folder_through_a_symlink(w: World):
    (w.root / "link").symlink_to(w.root / "site" / "data" / "sub-002")
    return _check(w, "--passport", str(w.root / "link" / "passport.json"))


def preview_into_the_data(w: World):
    return _check(w, "--preview", str(w.root / "site" / "data" / "preview.png"))


def work_dir_in_an_image_folder_outside_data_root(w: World):
    (w.root / "elsewhere").mkdir()
    w.edit_site(data_root=str(w.root / "elsewhere"), work_dir=str(w.root / "site" / "data" / "sub-003"))
    return _check(w)


def convert_into_the_dicom_folder(w: World):
    return endofed_main, ["data", "convert", str(w.root / "site" / "data"), str(w.root / "site" / "data" / "nifti")]


def pretrain_out_into_the_data(w: World):
    out = w.root / "site" / "data" / "sub-001" / "pretrain"
    return endofed_main, ["pretrain", "--site", str(w.site_yaml), "--config", TINY, *SETS, "--out", str(out)]


def compare_out_into_the_data(w: World):
    experiment = ROOT / "configs" / "experiments" / "demo.yaml"
    out = w.root / "site" / "data" / "runs"
    return endofed_main, ["compare", "--experiment", str(experiment), "--sites", str(w.site_yaml), "--out", str(out)]


def manifest_is_a_fifo(w: World):
    os.mkfifo(w.root / "manifest-pipe")  # reading it would block for ever
    w.edit_site(manifest=str(w.root / "manifest-pipe"))
    return _check(w)


def labels_file_is_a_fifo(w: World):
    os.mkfifo(w.root / "labels-pipe")
    w.edit_site(manifest=None, labels_csv=str(w.root / "labels-pipe"))
    return _check(w)


def config_is_a_fifo(w: World):
    os.mkfifo(w.root / "config-pipe")
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", str(w.root / "config-pipe")]


def site_yaml_is_a_folder(w: World):
    return endofed_main, ["data", "check", "--site", str(w.root / "site" / "data"), "--config", TINY]


def bad_config_override(w: World):
    return endofed_main, [
        "data",
        "check",
        "--site",
        str(w.site_yaml),
        "--config",
        TINY,
        "--set",
        "data.roi_sise=[8,8,8]",
    ]


def no_labelled_case(w: World):
    manifest = w.root / "site" / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], *(",".join(line.split(",")[:3]) + "," for line in lines[1:])]) + "\n")
    out = w.root / "ft"
    return endofed_main, [
        "finetune",
        "--site",
        str(w.site_yaml),
        "--init",
        "scratch",
        "--out",
        str(out),
        "--config",
        TINY,
        *SETS,
    ]


def corrupt_checkpoint(w: World):
    bad = w.root / "encoder.safetensors"
    bad.write_bytes(b"\x00" * 64)
    out = w.root / "ft"
    return endofed_main, [
        "finetune",
        "--site",
        str(w.site_yaml),
        "--init",
        str(bad),
        "--out",
        str(out),
        "--config",
        TINY,
        *SETS,
    ]


def client_with_failing_data(w: World):
    (w.root / "site" / "data" / "sub-001" / "T1.nii.gz").write_bytes(b"")
    return client_main, ["--site", str(w.site_yaml), "--config", TINY, *SETS]


def client_key_readable_by_others(w: World):
    os.chmod(w.root / "certs" / "keys" / "h1", 0o644)
    return client_main, ["--site", str(w.site_yaml), "--config", TINY, *SETS]


def client_expired_ca(w: World):
    _self_signed(w.root / "old-ca.crt", (-400, -30))
    w.edit_site(root_certificates=str(w.root / "old-ca.crt"))
    return client_main, ["--site", str(w.site_yaml), "--config", TINY, *SETS]


def client_given_server_cert_as_ca(w: World):
    w.edit_site(root_certificates=str(w.root / "certs" / "server.pem"))
    return client_main, ["--site", str(w.site_yaml), "--config", TINY, *SETS]


def server_cert_from_another_ca(w: World):
    create_credentials(w.root / "other", hosts=["127.0.0.1"], site_ids=["x"])
    server = yaml.safe_load(w.server_yaml.read_text()) | {"ca_certificate": str(w.root / "other" / "ca.crt")}
    w.server_yaml.write_text(yaml.safe_dump(server))
    return server_main, ["--config", str(w.server_yaml), "--rounds", "1"]


def server_port_in_use(w: World):
    port = yaml.safe_load(w.server_yaml.read_text())["port"]
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    w.blocker = blocker  # type: ignore[attr-defined]  # closed when the world goes
    return server_main, ["--config", str(w.server_yaml), "--rounds", "1"]


def malformed_server_yaml(w: World):
    w.server_yaml.write_text("port: 9092\n  ca_certificate: x\n")
    return server_main, ["--config", str(w.server_yaml), "--rounds", "1"]


def server_missing_site_key(w: World):
    server = yaml.safe_load(w.server_yaml.read_text()) | {"site_public_keys": [str(w.root / "nowhere.pub")]}
    w.server_yaml.write_text(yaml.safe_dump(server))
    return server_main, ["--config", str(w.server_yaml), "--rounds", "1"]


def server_resume_without_a_run(w: World):
    return server_main, ["--resume", str(w.root / "out")]


def server_resume_with_other_options(w: World):
    return server_main, ["--resume", str(w.root / "out"), "--rounds", "5"]


def server_folder_already_holds_a_run(w: World):
    (w.root / "out").mkdir()
    (w.root / "out" / "launch.json").write_text("{}")
    return server_main, ["--config", str(w.server_yaml), "--rounds", "1"]


def server_privacy_budget_too_small(w: World):
    dp = ["federation.dp_noise_multiplier=1.0", "federation.dp_clipping_norm=1.0", "federation.dp_max_epsilon=2"]
    return server_main, ["--config", str(w.server_yaml), "--rounds", "5", *(a for o in dp for a in ("--set", o))]


def compare_bad_experiment(w: World):
    (w.root / "exp.yaml").write_text(f"config: {TINY}\npretrain_epochs: 3\nlocal_epochs: 2\n")
    return endofed_main, ["compare", "--experiment", str(w.root / "exp.yaml"), "--sites", str(w.site_yaml)]


CASES: dict[str, tuple[Setup, str]] = {
    "corrupt (truncated) image": (corrupt_image, r"sub-001"),
    "file that is not NIfTI": (not_an_image, r"sub-002"),
    "T1 and T2 that do not overlap": (mismatched_scans, r"sub-003"),
    "image listed but missing": (missing_file, r"sub-004"),
    "manifest without a t2 column": (manifest_without_t2_column, r"t2"),
    "malformed site YAML": (malformed_site_yaml, r"site\.yaml"),
    "misspelt site YAML key": (misspelt_site_key, r"did you mean 'manifest'"),
    "work_dir inside the data": (work_dir_inside_data, r"work_dir .* is inside the source data folder"),
    "passport onto a source image": (passport_onto_a_source_image, r"passport .*T1\.nii\.gz is a source file"),
    "passport onto the manifest": (passport_onto_the_manifest, r"manifest\.csv is a source file"),
    "passport into an image folder (symlink)": (
        passport_into_an_image_folder_through_a_symlink,
        r"link/passport\.json is inside the source data folder",
    ),
    "preview into the data folder": (preview_into_the_data, r"preview .* is inside the source data folder"),
    "work_dir in an image folder, not data_root": (
        work_dir_in_an_image_folder_outside_data_root,
        r"work_dir .*sub-003 is inside the source data folder",
    ),
    "pretrain --out inside an image folder": (pretrain_out_into_the_data, r"--out .* is inside the source data folder"),
    "compare --out inside the data": (compare_out_into_the_data, r"--out .*runs is inside the source data folder"),
    "manifest is a FIFO": (manifest_is_a_fifo, r"manifest .*manifest-pipe is not a regular file"),
    "labels file is a FIFO": (labels_file_is_a_fifo, r"labels file .*labels-pipe is not a regular file"),
    "config is a FIFO": (config_is_a_fifo, r"config-pipe is not a regular file"),
    "site YAML is a folder": (site_yaml_is_a_folder, r"data is not a regular file"),
    "convert output inside DICOM_DIR": (convert_into_the_dicom_folder, r"OUT_DIR .* is inside the source data folder"),
    "misspelt --set key": (bad_config_override, r"did you mean 'roi_size'"),
    "site with zero labelled cases": (no_labelled_case, r"labelled"),
    "corrupt encoder checkpoint": (corrupt_checkpoint, r"encoder\.safetensors"),
    "client: data check fails": (client_with_failing_data, r"not ready to join"),
    "client: private key readable by others": (client_key_readable_by_others, r"must be 600"),
    "client: expired CA certificate": (client_expired_ca, r"old-ca\.crt is valid from"),
    "client: server certificate given as CA": (client_given_server_cert_as_ca, r"not a CA certificate"),
    "server: certificate of another CA": (server_cert_from_another_ca, r"not signed by the CA"),
    "server: port already in use": (server_port_in_use, r"already in use"),
    "server: malformed YAML": (malformed_server_yaml, r"server\.yaml"),
    "server: site key missing": (server_missing_site_key, r"nowhere\.pub"),
    "compare: budgets not a multiple of local epochs": (compare_bad_experiment, r"multiple of local_epochs"),
    "server: --resume of a folder without a run": (server_resume_without_a_run, r"holds no endofed-server run"),
    "server: --resume with other options": (server_resume_with_other_options, r"--resume takes no other option"),
    "server: new run into a folder that holds one": (server_folder_already_holds_a_run, r"already holds a run"),
    "server: DP budget too small for the rounds": (server_privacy_budget_too_small, r"dp_max_epsilon=2 is too small"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_changes_nothing(case, world, capsys):
    setup, expected = CASES[case]
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

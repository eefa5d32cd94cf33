"""Bad inputs end to end, through the real commands: one clear line naming the cause, a non-zero exit, no
traceback, and the site's source data (images + manifest) byte for byte unchanged.

Each case starts from a fresh copy of a small generated site with real NIfTI files and real certificates,
breaks one thing, runs one command, and checks the outcome. The list is the catalogue quoted in the notes.
"""

from __future__ import annotations

import gzip
import os
import socket

import nibabel as nib
import numpy as np
import pytest
import yaml

from endofed.certs import create_credentials
from endofed.cli.client import main as client_main
from endofed.cli.main import main as endofed_main
from endofed.cli.server import main as server_main
from tests.bad_input_world import (
    SETS,
    Setup,
    World,
    assert_one_clear_line,
    self_signed,
)
from tests.helpers import TINY


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
    self_signed(w.root / "old-ca.crt", (-400, -30))
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


def _server_with(w: World, **changes: object):
    w.server_yaml.write_text(yaml.safe_dump(yaml.safe_load(w.server_yaml.read_text()) | changes))
    return server_main, ["--config", str(w.server_yaml), "--rounds", "1"]


def server_key_is_its_certificate(w: World):
    return _server_with(w, server_key=str(w.root / "certs" / "server.pem"))


def server_registers_a_private_key(w: World):
    return _server_with(w, site_public_keys=[str(w.root / "certs" / "keys" / "h1")])


def server_app_dir_is_not_the_app(w: World):
    return _server_with(w, app_dir=str(w.root / "site"))


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
    "server: its key is its certificate": (server_key_is_its_certificate, r"PEM private key from .*server\.pem"),
    "server: a site's private key registered": (server_registers_a_private_key, r"keys/h1 is a private key"),
    "server: app_dir is not the app": (server_app_dir_is_not_the_app, r"site is not the endofed app folder"),
    "compare: budgets not a multiple of local epochs": (compare_bad_experiment, r"multiple of local_epochs"),
    "server: --resume of a folder without a run": (server_resume_without_a_run, r"holds no endofed-server run"),
    "server: --resume with other options": (server_resume_with_other_options, r"--resume takes no other option"),
    "server: new run into a folder that holds one": (server_folder_already_holds_a_run, r"already holds a run"),
    "server: DP budget too small for the rounds": (server_privacy_budget_too_small, r"dp_max_epsilon=2 is too small"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_changes_nothing(case, world, capsys):
    setup, expected = CASES[case]
    assert_one_clear_line(case, setup, expected, world, capsys)

"""Bad inputs of the deployment launchers end to end, through ``endofed-client`` / ``endofed-server``'s ``main``.

Client cases start a real SuperLink (TLS, SuperNode authentication) on 127.0.0.1 with a certificate that is
wrong in one way, point the site at it and run the real client: its SuperNodes fail, each attempt's cause is
read from ``logs/supernode.log``, and restarting stops after a bounded number of identical failures with one
line naming the cause. Waits between attempts are shortened (``retry_wait`` patched); everything else is real.
Resume cases break one thing in a run folder; the pre-flight names it before any process starts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from endofed.certs import create_credentials
from endofed.cli.client import main as client_main
from endofed.cli.server import main as server_main
from endofed.config import load_config, load_server_config, to_dict
from endofed.federated.protocol import STATE_FILE, STATE_KIND
from endofed.io.checkpoint import config_hash, save_checkpoint
from endofed.launch import deployment
from endofed.launch.deployment import CONNECTION, register_sites, superlink_command
from endofed.launch.flwr import env_path_with_venv, write_connection
from endofed.launch.processes import Child, flower_env, wait_for_port
from endofed.launch.run_record import Launch, write_launch
from tests.bad_input_world import SETS, World, assert_one_clear_line
from tests.helpers import TINY

CLIENT_CASE_S = 120  # data check + up to 10 SuperNode starts (~2 s each on 2 cores) + SuperLink start and stop


def issue_server_cert(world: World, names: Sequence[str], days: tuple[float, float]) -> tuple[Path, Path]:
    """A SuperLink certificate from the world's CA for ``names``, valid from now+days[0] to now+days[1]."""
    certs = world.root / "certs"
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SuperLink")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0])).not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem, pem_key = world.root / "link.pem", world.root / "link.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pem_key.chmod(0o600)
    return pem, pem_key


@pytest.fixture()
def superlink(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """``start(cert, key, register=False)``: a real SuperLink on 127.0.0.1 that the world's site dials."""
    monkeypatch.setattr(deployment, "retry_wait", lambda attempt, first_s=5.0: 0.1)
    started: list[Child] = []

    def start(cert: Path, key: Path, register: bool = False) -> int:
        server = load_server_config(world.server_yaml)
        server = dataclasses.replace(server, server_certificate=cert, server_key=key)
        server.output_dir.mkdir(parents=True, exist_ok=True)
        env = env_path_with_venv(flower_env(world.root / "link-home"))
        write_connection(world.root / "link-home", CONNECTION, f"127.0.0.1:{server.port}", server.ca_certificate)
        child = Child("SuperLink", superlink_command(server), world.root / "superlink.log", env)
        started.append(child)
        wait_for_port(child, server.port)
        if register:
            register_sites(server, env)
        world.edit_site(server_address=f"127.0.0.1:{server.port}")
        return server.port

    yield start
    for child in started:
        child.stop()  # by PID (its process group)


def client_argv(world: World) -> list[str]:
    return ["--site", str(world.site_yaml), "--config", TINY, *SETS]


def timed_client_case(case: str, expected: str, world: World, capsys: pytest.CaptureFixture) -> float:
    started = time.monotonic()
    assert_one_clear_line(case, lambda w: (client_main, client_argv(w)), expected, world, capsys)
    return time.monotonic() - started


@pytest.mark.integration
@pytest.mark.timeout(CLIENT_CASE_S)
def test_client_server_certificate_for_another_host(world, superlink, capsys, caplog):
    port = superlink(*issue_server_cert(world, ["elsewhere.example"], (-1, 30)))
    seconds = timed_client_case(
        "server certificate for another host",
        rf"endofed: error: SuperNode could not join 127\.0\.0\.1:{port} \(3 identical failures, giving up\): the "
        r"server certificate is for elsewhere\.example, not '127\.0\.0\.1' .*supernode\.log",
        world,
        capsys,
    )
    attempts = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(attempts) == 2 and all("is for elsewhere.example" in a for a in attempts)  # a line per failure
    assert seconds < 60


VALIDITY_CASES = {
    "not yet valid (site clock behind)": (
        (5, 60),
        r"the server certificate is not valid yet \(valid from \d{4}-\d\d-\d\d .*UTC\); this site's clock says "
        r".*is it behind\?",
    ),
    "expired": ((-60, -2), r"the server certificate expired on \d{4}-\d\d-\d\d .*the coordinator must renew it"),
}


@pytest.mark.integration
@pytest.mark.timeout(CLIENT_CASE_S)
@pytest.mark.parametrize("case", list(VALIDITY_CASES))
def test_client_server_certificate_outside_its_validity(case, world, superlink, capsys):
    days, expected = VALIDITY_CASES[case]
    superlink(*issue_server_cert(world, ["127.0.0.1"], days))
    timed_client_case(case, r"endofed: error: .*giving up\): " + expected, world, capsys)


@pytest.mark.integration
@pytest.mark.timeout(CLIENT_CASE_S)
def test_client_trusting_another_ca(world, superlink, capsys):
    create_credentials(world.root / "other", hosts=["127.0.0.1"], site_ids=["x"], ca_name="Other federation CA")
    superlink(world.root / "certs" / "server.pem", world.root / "certs" / "server.key")
    world.edit_site(root_certificates=str(world.root / "other" / "ca.crt"))
    timed_client_case(
        "site trusts another CA",
        r"endofed: error: .*giving up\): the server certificate \(issued by 'CN=.*'\) is not signed by the CA in "
        r"root_certificates \(.*other/ca\.crt\)",
        world,
        capsys,
    )


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(CLIENT_CASE_S)
def test_client_key_not_registered_gives_up_after_ten_attempts(world, superlink, capsys):
    superlink(world.root / "certs" / "server.pem", world.root / "certs" / "server.key", register=False)
    timed_client_case(
        "site key not registered",
        r"endofed: error: .*\(10 identical failures, giving up\): the SuperLink refused this site's key",
        world,
        capsys,
    )


# ---------------------------------------------------------------------------------------------------- --resume


def make_run(world: World, **meta: object) -> Path:
    """A run folder as a crashed endofed-server leaves it: launch.json and the state after pre-training round 1."""
    launch = Launch(load_server_config(world.server_yaml), (), "out-0123abcd")
    write_launch(launch)
    cfg = load_config(launch.server.experiment)
    metadata = {"kind": STATE_KIND, "phase": "pretrain", "round": 1, "config_hash": config_hash(to_dict(cfg)),
                "strategy": {}} | meta  # fmt: skip
    save_checkpoint(launch.server.output_dir / STATE_FILE, {"global.w": torch.ones(256)}, metadata)
    return launch.server.output_dir


def resume_truncated_state(w: World):
    state = make_run(w) / STATE_FILE
    state.write_bytes(state.read_bytes()[:-512])
    return server_main, ["--resume", str(w.root / "out")]


def resume_edited_state(w: World):
    state = make_run(w) / STATE_FILE
    data = bytearray(state.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last weight set to +inf: same size, other content
    state.write_bytes(bytes(data))
    return server_main, ["--resume", str(w.root / "out")]


def resume_state_round_edited(w: World):
    make_run(w, round=99)
    return server_main, ["--resume", str(w.root / "out")]


def resume_state_without_metadata(w: World):
    (make_run(w) / "server_state.json").unlink()
    return server_main, ["--resume", str(w.root / "out")]


def resume_malformed_launch_json(w: World):
    (make_run(w) / "launch.json").write_text('{"server": {"port": 9092,')
    return server_main, ["--resume", str(w.root / "out")]


def resume_launch_json_wrong_shape(w: World):
    (make_run(w) / "launch.json").write_text('{"server": [], "overrides": [], "run_key": "k"}')
    return server_main, ["--resume", str(w.root / "out")]


def resume_launch_json_hostile_run_key(w: World):
    path = make_run(w) / "launch.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"run_key": "../../etc"}))
    return server_main, ["--resume", str(w.root / "out")]


RESUME_CASES = {
    "truncated server state": (resume_truncated_state, r"out/server_state\.safetensors is truncated \(\d+ of \d+"),
    "edited server state": (resume_edited_state, r"server_state\.safetensors is corrupt or was modified"),
    "server state round out of range": (resume_state_round_edited, r"invalid phase/round .*round 99 is outside"),
    "server state metadata missing": (resume_state_without_metadata, r"metadata .*server_state\.json not found"),
    "malformed launch.json": (resume_malformed_launch_json, r"out/launch\.json is not a valid run record"),
    "launch.json of the wrong shape": (resume_launch_json_wrong_shape, r"launch\.json is not a valid run record"),
    "launch.json with a path as run key": (resume_launch_json_hostile_run_key, r"launch\.json .*'run_key' must be"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_of_a_broken_run_folder_names_the_file_and_the_check(case, world, capsys):
    setup, expected = RESUME_CASES[case]
    started = time.monotonic()
    assert_one_clear_line(case, setup, expected, world, capsys)
    assert not (world.root / "out" / "superlink.pid").exists()  # refused before the SuperLink started
    assert time.monotonic() - started < 30

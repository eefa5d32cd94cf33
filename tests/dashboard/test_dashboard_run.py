"""The dashboard on a run folder written by a real ``endofed-sim`` run: TestClient, then a real browser.

The browser test serves the page with a real ``endofed dashboard`` process on 127.0.0.1 and loads it with headless
Chromium (``--dump-dom`` and ``--screenshot``). ``make test`` installs Chromium when it is missing and apt-get is
usable (Debian package ``chromium``); without a browser the test is skipped with the reason printed (``-ra``).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from endofed.cli.main import main as endofed_main
from endofed.cli.sim import main as sim_main
from endofed.dashboard.app import DashboardSettings, create_app
from endofed.launch.processes import free_port
from tests.helpers import OVERRIDES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITES = ("alpha", "bravo")
PROFILE = "sites:\n" + "".join(
    f"  - {{name: {name}, cohort: {{subjects: 6, labelled_fraction: 1.0, prevalence: 0.5}}}}\n" for name in SITES
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
ROUTES = ("/", "/status.json", "/plots/loss.svg", "/plots/bytes.svg")


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, run folder) of a finished 2-site simulation: 2 pre-training rounds, 1 fine-tuning round."""
    root = tmp_path_factory.mktemp("dashboard_sim")
    (root / "profile.yaml").write_text(PROFILE)
    assert endofed_main(["synth", "--profile", str(root / "profile.yaml"), "--out", str(root / "data")]) == 0
    args = ["--sites", str(root / "data"), "--rounds", "2", "--finetune-rounds", "1", "--out", str(root / "run"),
            "--app", str(ROOT)]  # fmt: skip
    for item in OVERRIDES:
        args += ["--set", item]
    assert sim_main(args) == 0
    return root / "data", root / "run"


def private_strings(data: Path) -> list[str]:
    """What no page may show: every site's data, work and YAML paths, and every subject id."""
    found = [str(data.resolve())]
    for name in SITES:
        found += [str((data / name).resolve()), str((data / f"site_{name}.yaml").resolve())]
        with (data / name / "manifest.csv").open() as handle:
            found += [row["subject_id"] for row in csv.DictReader(handle)]
    assert len(found) > 10
    return found


def test_the_dashboard_shows_a_finished_simulation(sim_run: tuple[Path, Path]):
    data, run = sim_run
    client = TestClient(create_app(DashboardSettings(run)))
    status = client.get("/status.json").json()
    assert (status["state"], status["kind"], status["outcome"]) == ("finished", "simulation", "completed")
    assert status["completed"] == {"pretrain": 2, "finetune": 1} and [s["name"] for s in status["sites"]] == list(SITES)
    assert all(s["last_round"] == "finetune 1" and s["rejected"] == 0 for s in status["sites"])
    page = client.get("/").text
    assert 'http-equiv="refresh"' not in page  # a finished run does not refresh
    rows = page.split('<table id="sites">')[1].split("</table>")[0]
    for name in SITES:  # a row per site, named from the site YAMLs the run was submitted with
        assert f'<td class="text"><b>{name}</b></td>' in rows
    assert rows.count("finetune 1") == 2
    timeline = page.split('<table id="timeline">')[1].split("</table>")[0]
    assert timeline.count('<td class="text">pretrain</td>') == 2 and timeline.count(">finetune<") == 1
    assert "Data passports" in page and page.count("ready: True") == 2  # the sites' passports, on this machine
    for plot in ("/plots/loss.svg", "/plots/bytes.svg"):
        reply = client.get(plot)
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/svg+xml"
        assert b"<svg" in reply.content and len(reply.content) > 5000


def test_no_page_shows_a_site_path_or_a_subject_id(sim_run: tuple[Path, Path]):
    data, run = sim_run
    client = TestClient(create_app(DashboardSettings(run, [data / f"site_{n}.yaml" for n in SITES])))
    secret = private_strings(data)
    for route in ROUTES:
        reply = client.get(route)
        assert reply.status_code == 200
        leaked = [s for s in secret if s in reply.text]
        assert not leaked, (route, leaked[:3])


def test_the_token_is_enforced_when_bound_beyond_loopback(sim_run: tuple[Path, Path]):
    _, run = sim_run
    reply = subprocess.run([sys.executable, "-m", "endofed.cli.main", "dashboard", "--run", str(run), "--host",
                            "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "ENDOFED_DASHBOARD_TOKEN": ""})  # fmt: skip
    assert reply.returncode != 0 and "needs a token" in reply.stderr and "Traceback" not in reply.stderr
    client = TestClient(create_app(DashboardSettings(run, token="t0ken")))
    assert all(client.get(route).status_code == 401 for route in ROUTES)
    assert all(client.get(route, params={"token": "t0ken"}).status_code == 200 for route in ROUTES)


def find_browser() -> str | None:
    """Headless Chromium: ``$CHROMIUM``, else the first of chromium / chromium-browser / google-chrome on PATH."""
    return os.environ.get("CHROMIUM") or next(filter(None, (shutil.which(b) for b in BROWSERS)), None)


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200 (fails early if the process died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "endofed dashboard exited before serving"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"endofed dashboard did not answer {url} within {timeout_s} s")


@pytest.mark.timeout(300)
def test_a_real_browser_renders_the_sites_and_rounds(sim_run: tuple[Path, Path], tmp_path: Path):
    browser = find_browser()
    if browser is None:
        reason = "no Chromium found (install the Debian package 'chromium'; make test does so when apt-get is usable)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    _, run = sim_run
    port = free_port()
    command = [sys.executable, "-m", "endofed.cli.main", "dashboard", "--run", str(run), "--port", str(port)]
    with (tmp_path / "dashboard.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url + "status.json", process)
        chrome = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1600"]  # fmt: skip
        dom = subprocess.run([*chrome, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = tmp_path / "dashboard.png"
        taken = subprocess.run([*chrome, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    for name in SITES:
        assert f"<b>{name}</b>" in dom.stdout
    timeline = dom.stdout.split('<table id="timeline">')[1].split("</table>")[0]
    for phase, number in (("pretrain", 1), ("pretrain", 2), ("finetune", 1)):
        assert f'<td class="text">{phase}</td><td>{number}</td>' in timeline
    assert "finished" in dom.stdout

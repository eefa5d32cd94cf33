"""The dashboard during a real deployment: endofed-server --dashboard with three endofed-client processes.

Sets up three tiny synthetic hospitals with TLS and node authentication on 127.0.0.1 (the tests' deployment kit),
starts `endofed-server --dashboard` and three `endofed-client` processes, and polls the dashboard's
`/status.json` while the rounds land: one line per change of what it shows (status, phase and round, each site's
connection and last round). Halfway through it saves a headless-Chromium screenshot of the live page
(`docs/dashboard-live.png`). Prints the record for docs/dashboard.md.

Run: ``python benchmarks/dashboard_live.py [--rounds 6] [--out /tmp/dashboard-live]`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from endofed.launch.processes import free_port  # noqa: E402
from tests.deploy_kit import make_federation, start, start_client, stop  # noqa: E402


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (127.0.0.1 only)
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _summary(status: dict) -> str:
    """What the page shows, in one line: run status, phase and round, per site connected / last round."""
    sites = status.get("sites", [])
    shown = ", ".join(f"{s['name']}: {s['connected']} / {s['last_round']}" for s in sites)
    return f"{status.get('state')} {status.get('phase')} round {status.get('round')} | {shown}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="pre-training rounds (fine-tuning: 2)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dashboard-live"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    fed = make_federation(args.out, ["hospital_a", "hospital_b", "hospital_c"],
                          (f"federation.pretrain_rounds={args.rounds}", "federation.finetune_rounds=2",
                           "federation.min_sites=3"))  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clients = [start_client(fed, name) for name in fed.sites]
    server = start(["endofed-server", "--config", str(fed.server_yaml), "--dashboard", "--dashboard-port",
                    str(port), "--quiet"], args.out / "server.log")  # fmt: skip
    started, last, shot = time.monotonic(), "", False
    try:
        while server.poll() is None:
            status = _get(f"{url}/status.json")
            if status is not None:
                line = _summary(status)
                if line != last:
                    print(f"{time.monotonic() - started:6.0f} s  {line}", flush=True)
                    last = line
                if not shot and status.get("phase") == "pretrain" and int(status.get("round") or 0) >= args.rounds // 2:
                    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
                    if chromium:
                        subprocess.run([chromium, "--headless", "--no-sandbox", "--window-size=1300,1450",
                                        f"--screenshot={ROOT / 'docs' / 'dashboard-live.png'}", url],
                                       capture_output=True, timeout=120, check=False)  # fmt: skip
                        print(f"{time.monotonic() - started:6.0f} s  screenshot docs/dashboard-live.png", flush=True)
                    shot = True
            time.sleep(2)
        print(f"endofed-server exited {server.returncode} after {time.monotonic() - started:.0f} s")
    finally:
        for process in clients:
            stop(process)
        stop(server)
    return int(server.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())

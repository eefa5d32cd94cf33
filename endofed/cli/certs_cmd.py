"""``endofed certs``: create the CA, the SuperLink TLS certificate and one SuperNode key pair per site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from endofed.certs import DEFAULT_CA_NAME, DEFAULT_DAYS, Credentials, create_credentials
from endofed.cli.common import EXIT_OK


def register(commands: Any) -> None:
    """Add the ``certs`` command."""
    parser = commands.add_parser(
        "certs",
        help="create TLS certificates and SuperNode keys for a deployment",
        description=(
            "Create a private CA (ca.crt, ca.key), the SuperLink certificate (server.pem, server.key) with a SAN "
            "for every --host plus 127.0.0.1 and localhost, and an ECDSA P-384 SuperNode key pair per --site "
            "(keys/<site>, keys/<site>.pub, OpenSSH format). Private keys are created with mode 600. "
            "Existing files are never overwritten."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="destination folder")
    parser.add_argument(
        "--host",
        required=True,
        action="append",
        dest="hosts",
        metavar="HOST",
        help="IP address or DNS name the sites dial to reach the SuperLink (repeatable)",
    )
    parser.add_argument(
        "--site",
        required=True,
        action="append",
        dest="sites",
        metavar="ID",
        help="site id; one key pair per site (repeatable)",
    )
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"validity of the certificates (default {DEFAULT_DAYS})"
    )
    parser.add_argument("--ca-name", default=DEFAULT_CA_NAME, help=f"CA common name (default {DEFAULT_CA_NAME!r})")
    parser.set_defaults(handler=run_certs)


def describe(credentials: Credentials) -> str:
    """What was written and who does what with it next (printed after ``endofed certs``)."""
    ca, server = credentials.ca, credentials.server
    out = ca.cert_path.parent.resolve()
    until = server.cert.not_valid_after_utc.strftime("%Y-%m-%d")
    width = max(len(f"keys/{site.site_id}.pub") for site in credentials.sites)
    rows = [
        ("ca.crt", "CA certificate: give to every site and to the operator's flwr CLI"),
        ("ca.key", "CA private key (600): keep offline; only needed to issue a new server certificate"),
        ("server.pem", f"SuperLink certificate for {', '.join(server.hosts)} (valid until {until})"),
        ("server.key", "SuperLink private key (600): stays on the SuperLink host"),
    ]
    for site in credentials.sites:
        rows.append((f"keys/{site.site_id}", f"{site.site_id}'s private key (600): send to that site only, securely"))
        rows.append((f"keys/{site.site_id}.pub", f"{site.site_id}'s public key: register it on the SuperLink"))
    lines = [f"Wrote deployment credentials to {out}:"]
    lines += [f"  {name:<{max(width, 10)}}  {text}" for name, text in rows]
    lines += [
        "",
        "Operator (SuperLink host):",
        f"  flower-superlink --ssl-ca-certfile {out}/ca.crt --ssl-certfile {out}/server.pem "
        f"--ssl-keyfile {out}/server.key --enable-supernode-auth ...",
        "  register every site (endofed-server does this; by hand: one command per site):",
    ]
    lines += [f"    flwr supernode register {out}/keys/{site.site_id}.pub <connection>" for site in credentials.sites]
    lines += [
        f'  flwr CLI connection (config.toml): root-certificates = "{out}/ca.crt"',
        "",
        "Each site: copy ca.crt and its own keys/<site> (only that one), then set in its site YAML:",
        "    root_certificates: ca.crt",
        "    private_key: keys/<site>",
        "  (endofed-client passes them as flower-supernode --root-certificates ... --auth-supernode-private-key ...)",
    ]
    return "\n".join(lines)


def run_certs(args: argparse.Namespace) -> int:
    """``endofed certs``."""
    credentials = create_credentials(args.out, args.hosts, args.sites, days=args.days, ca_name=args.ca_name)
    print(describe(credentials), file=sys.stdout)
    return EXIT_OK

"""App-bundle hashes: what ``flwr run APP_DIR`` ships, how a site lists the ones it approves, why one is refused.

The hash of a bundle is the SHA-256 of the FAB's bytes, as Flower computes it (``flwr/cli/run/run.py``:
``hashlib.sha256(build_fab_from_disk(app)).hexdigest()``). Flower builds the FAB deterministically (sorted
files, a fixed zip date), so the same app folder always gives the same hash, and any changed byte of a shipped
file gives another one. :func:`bundle_hash` calls Flower's own builder (no side effects: it returns the bytes),
so what a site approves is exactly what the coordinator's ``flwr run`` (and ``endofed-server``) sends.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from pathlib import Path

from endofed.errors import ConfigError
from endofed.federated.site_errors import SITE_NOT_APPROVED

NOT_APPROVED = SITE_NOT_APPROVED  # the error code of the reply to a refused bundle
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
REFUSAL_TAG = "endofed approval: refused app bundle"  # starts the one site-log line of a refusal


def sha256_hex(content: bytes) -> str:
    """The lower-case hex SHA-256 of ``content`` (Flower's FAB hash when ``content`` is a FAB)."""
    return hashlib.sha256(content).hexdigest()


def check_hash_list(values: Iterable[str], where: str) -> None:
    """Require 64 lower-case hex digits in every entry, and no entry twice.

    Raises:
        ValueError: naming ``where`` and the first bad entry (a :class:`ConfigError`).
    """
    seen: set[str] = set()
    for index, value in enumerate(values):
        if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
            raise ConfigError(
                f"{where}[{index}] must be a SHA-256 hash, 64 lower-case hex digits (as 'endofed app hash' "
                f"prints it), got {value!r}"
            )
        if value in seen:
            raise ConfigError(f"{where}[{index}] lists {value} twice")
        seen.add(value)


def build_bundle(app_dir: Path) -> bytes:
    """The FAB that ``flwr run APP_DIR`` would ship (Flower's own builder).

    Raises:
        ConfigError: ``app_dir`` is not a folder, or Flower cannot build a bundle from it (its reason).
    """
    app_dir = Path(app_dir).expanduser()
    if not app_dir.is_dir():
        raise ConfigError(f"app folder not found: {app_dir}")
    if not (app_dir / "pyproject.toml").is_file():
        raise ConfigError(f"{app_dir} is not a Flower app folder (no pyproject.toml)")
    from flwr.cli.build import build_fab_from_disk  # Flower glue; imported only when a bundle is built
    from flwr.cli.utils import AppPathDepthError

    try:
        return build_fab_from_disk(app_dir)
    except (ValueError, AppPathDepthError, OSError) as exc:
        first = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
        raise ConfigError(f"Flower cannot build a bundle from {app_dir}: {first[0]}") from None


def bundle_hash(app_dir: Path) -> str:
    """The SHA-256 of the bundle ``flwr run APP_DIR`` would ship: the value to list in ``approved_apps``."""
    return sha256_hex(build_bundle(app_dir))


def refusal_cause(content: bytes, claimed: Iterable[str], approved: Collection[str]) -> str | None:
    """Why a received bundle must not run, or ``None`` if it may.

    Args:
        content: the FAB's bytes as the SuperNode received them.
        claimed: the hashes the SuperLink gave for it (the run's and the FAB's); Flower does not check them,
            and it loads the app from the folder named by the claimed hash, so they must equal the real one.
        approved: the site's ``approved_apps``.
    """
    actual = sha256_hex(content)
    if actual not in approved:
        return "its sha256 is not in approved_apps"
    if any(hash_ != actual for hash_ in claimed):
        return "the hash the coordinator gave for it is not the hash of its content"
    return None


def refusal_line(actual: str, run_id: int, app: str, cause: str) -> str:
    """The one site-log line of a refused bundle (no traceback, no site data)."""
    return (
        f"{REFUSAL_TAG} sha256:{actual} (run {run_id}, {app}): {cause}; none of its code ran; "
        f"the coordinator got error {NOT_APPROVED} (add the hash to approved_apps in the site YAML to allow it)"
    )


def refusal_reason(actual: str) -> str:
    """The error reply's reason for the coordinator: a fixed sentence and the hash it sent (nothing of the site)."""
    return (
        f"endofed {NOT_APPROVED}: this site has not approved the app bundle with sha256 {actual}; "
        "its operator must add the hash ('endofed app hash APP_DIR') to approved_apps before it runs"
    )

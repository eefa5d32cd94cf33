"""A site's failure as the coordinator sees it: a category from the exception's type, a sentence from a list."""

from __future__ import annotations

import errno

import pytest

from endofed.errors import ConfigError, DataError, EndofedError
from endofed.federated.site_errors import (
    ERROR_LOG,
    SENTENCES,
    SITE_CONFIG,
    SITE_DATA,
    SITE_DIVERGED,
    SITE_INTERNAL,
    SITE_REFUSED,
    SITE_REFUSED_GLOBAL,
    SITE_RESOURCES,
    SITE_STORAGE,
    SITE_WITHHELD,
    GlobalRefused,
    StateNotFinite,
    WithheldReply,
    category,
    error_reason,
    write_error_log,
)

SECRET = "duplicate subject_id 'PAT-0042' in /data/endo/manifest.csv"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (DataError(SECRET, "duplicate_subject"), SITE_DATA),
        (ConfigError(SECRET), SITE_CONFIG),
        (OSError(errno.ENOSPC, "No space left", "/data/endo/PAT-0042"), SITE_STORAGE),
        (MemoryError(SECRET), SITE_RESOURCES),
        (EndofedError(SECRET), SITE_REFUSED),
        (GlobalRefused(SECRET), SITE_REFUSED_GLOBAL),  # the coordinator sent a poisoned encoder
        (StateNotFinite(SECRET), SITE_DIVERGED),
        (WithheldReply(SECRET), SITE_WITHHELD),  # the outgoing audit refused the site's own reply
        (KeyError(SECRET), SITE_REFUSED),
        (RuntimeError(SECRET), SITE_INTERNAL),
        (ZeroDivisionError(SECRET), SITE_INTERNAL),
    ],
)
def test_the_category_comes_from_the_type_and_the_reason_holds_nothing_of_the_message(exc, code):
    assert category(exc) == code
    reason = error_reason(category(exc))
    assert reason == f"endofed {code}: {SENTENCES[code]}"
    assert "PAT-0042" not in reason and "/data" not in reason


def test_codes_are_clear_of_flowers_and_unknown_codes_read_as_internal():
    assert min(SENTENCES) >= 100 and len(set(SENTENCES.values())) == len(SENTENCES)
    assert error_reason(7) == error_reason(SITE_INTERNAL).replace(str(SITE_INTERNAL), "7")


def test_the_detail_stays_in_the_sites_log(tmp_path):
    try:
        raise DataError(SECRET, "duplicate_subject")
    except DataError as exc:
        path = write_error_log(tmp_path / "logs", exc, "train")
        write_error_log(tmp_path / "logs", exc, "evaluate")
    assert path == tmp_path / "logs" / ERROR_LOG
    text = path.read_text()
    assert text.count("Traceback (most recent call last)") == 2 and SECRET in text
    assert "train: category 101" in text and "evaluate: category 101" in text

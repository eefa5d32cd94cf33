"""Make free text from a run folder safe to show: cut long strings and redact anything that looks like a path.

Rejection and failure reasons can quote what a (possibly hostile) site sent, and a site's error message can name a
file inside the site. HTML escaping is the template's job (Jinja2 autoescape); this module keeps paths out.
"""

from __future__ import annotations

import re

MAX_TEXT = 160  # characters of one reason shown on a page
REDACTED = "[path]"
# A word that starts like a path (at the start of the text or after a space, quote, =, bracket, comma, colon, < or
# >): /abs, ~/home, ./rel, ../up, C:\ or C:/, file:// URLs. A slash inside a word (a/b, 1/2) is not a path.
_PATH = re.compile(
    r"(?<![^\s'\"=(\[{,:<>])(?:file://|~|\.{1,2}(?=[\\/])|[A-Za-z]:(?=[\\/]))?[\\/][^\s'\"<>,;()\[\]{}]*"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def redact_paths(text: str) -> str:
    """``text`` with every path-like word replaced by ``[path]`` (``"no /a/b.nii"`` -> ``"no [path]"``)."""
    return _PATH.sub(REDACTED, text)


def safe_text(value: object, limit: int = MAX_TEXT) -> str:
    """A one-line, path-free string of at most ``limit`` characters (an ellipsis marks a cut)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    text = redact_paths(_CONTROL.sub(" ", str(value)).replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"

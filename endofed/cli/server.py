"""``endofed-server``: the federation coordinator (arrives with the federation issue)."""

from endofed.cli.common import not_yet_available


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``endofed-server``."""
    return not_yet_available("endofed-server", "the federation coordinator arrives with the federation issue", argv)


if __name__ == "__main__":
    raise SystemExit(main())

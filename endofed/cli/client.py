"""``endofed-client``: the hospital federation client (arrives with the federation issue)."""

from endofed.cli.common import not_yet_available

main = not_yet_available("endofed-client", "the hospital federation client arrives with the federation issue")

if __name__ == "__main__":
    raise SystemExit(main())

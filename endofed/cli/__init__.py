"""Command-line entry points (thin: parse, load config, call one library function, return an exit code)."""

"""``endofed compare``: every arm of the evidence on the same test patients, and the report."""

from __future__ import annotations

import ast
from pathlib import Path

import endofed

PACKAGE = Path(endofed.__file__).parent
PURE_FILES = [*sorted((PACKAGE / "federated").glob("*.py")), PACKAGE / "certs.py"]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_federation_numerics_and_certs_never_import_flower_or_pickle():
    assert len(PURE_FILES) >= 8
    for path in PURE_FILES:
        roots = {name.split(".")[0] for name in _imported_modules(path)}
        assert not roots & {"flwr", "pickle", "server", "client"}, (path.name, roots)

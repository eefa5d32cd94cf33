"""The arrows of ARCHITECTURE.md §1 and the purity rule of §5.2, checked on the source (AST) of every module.

* Only the Flower glue (``server/``, ``client/``) imports ``flwr``; the library does not (exceptions: FLWR_ALLOWED).
* The library never imports the top-level ``server`` or ``client`` packages (they travel in the app bundle only).
* ``endofed/models/`` and ``endofed/ssl/`` do no I/O: no files, printing, argparse, logging set-up or plotting.
* ``endofed/models/`` does not import ``endofed.ssl`` (the training loop uses the models, not the reverse).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import endofed

PACKAGE = Path(endofed.__file__).parent
LIBRARY = sorted(PACKAGE.rglob("*.py"))
PURE_FILES = [*sorted((PACKAGE / "federated").glob("*.py")), PACKAGE / "certs.py"]
PURE_MODEL_DIRS = ("models", "ssl")

# Modules of endofed that may import flwr, each with the reason. None today: endofed.launch and endofed.cli start
# Flower's programs (flower-superlink, flower-supernode, flwr) as subprocesses, which needs no import.
FLWR_ALLOWED: dict[str, str] = {  # module -> why it cannot be glue in server/ or client/
    "endofed.approval.gate": "the site's own SuperExec and ClientApp runner: it must run before any code of a bundle, "
    "so it is installed code, never part of the bundle (client/ travels in the bundle)",
    "endofed.approval.bundle": "hashes a bundle with Flower's own FAB builder, so the hash is exactly what flwr run "
    "sends (imported inside the function only)",
}

IO_IMPORTS = {"argparse", "matplotlib", "safetensors", "pickle", "PIL", "imageio", "nibabel", "endofed.io"}
IO_CALLS = {"open", "print", "torch.save", "torch.load", "numpy.save", "numpy.savez", "numpy.savez_compressed",
            "numpy.load", "logging.basicConfig", "sys.stdout.write", "sys.stderr.write"}  # fmt: skip
IO_METHODS = {"open", "savefig", "mkdir"}  # Path.open, Figure.savefig, Path.mkdir
IO_METHOD_PREFIXES = ("read_", "write_")  # Path.read_text, Path.write_bytes, ...


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, absolute module)`` of every import, relative ones resolved; ``from a import b`` gives a and a.b."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (base, node.module or "") if p)
            yield node.lineno, source
            yield from ((node.lineno, f"{source}.{alias.name}") for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _dotted(node.func) in {"importlib.import_module", "__import__"}:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _io_uses(tree: ast.AST, module: str = "m", is_package: bool = False) -> list[str]:
    """What in ``tree`` does I/O: ``'line: what'`` for imports and calls of IO_IMPORTS, IO_CALLS, IO_METHODS."""
    found = [f"{line}: import {name}" for line, name in _imports(tree, module, is_package)
             if any(name == bad or name.startswith(bad + ".") for bad in IO_IMPORTS)]  # fmt: skip
    aliases: dict[str, str] = {}  # local name -> what it is (import numpy as np: np -> numpy)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                            for a in node.names})  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        resolved = ".".join(p for p in (aliases.get(head, head), rest) if p)
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if resolved in IO_CALLS or method in IO_METHODS or method.startswith(IO_METHOD_PREFIXES):
            found.append(f"{node.lineno}: {name}()")
    return found


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _library_imports() -> Iterator[tuple[Path, int, str]]:
    for path in LIBRARY:
        for line, name in _imports(_parse(path), _module_name(path), path.name == "__init__.py"):
            yield path, line, name


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def test_federation_numerics_and_certs_never_import_flower_or_pickle():
    assert len(PURE_FILES) >= 8
    for path in PURE_FILES:
        roots = {name.split(".")[0] for _, name in _imports(_parse(path), _module_name(path), False)}
        assert not roots & {"flwr", "pickle", "server", "client"}, (path.name, roots)


def test_only_the_glue_imports_flower():
    assert len(LIBRARY) >= 60
    importing = {_module_name(p) for p, _, name in _library_imports() if name.split(".")[0] == "flwr"}
    found = [_where(p, line) for p, line, name in _library_imports()
             if name.split(".")[0] == "flwr" and _module_name(p) not in FLWR_ALLOWED]  # fmt: skip
    assert not found, f"flwr imported outside the glue (allowed: {sorted(FLWR_ALLOWED)}): {found}"
    assert importing == set(FLWR_ALLOWED), f"stale FLWR_ALLOWED entries: {set(FLWR_ALLOWED) - importing}"


def test_the_library_never_imports_the_server_or_client_role_packages():
    found = [f"{_where(p, line)} {name}" for p, line, name in _library_imports() if name.split(".")[0] in
             {"server", "client"}]  # fmt: skip
    assert not found, f"endofed imports the Flower role packages: {found}"


def test_model_and_self_supervision_code_does_no_io():
    files = [p for d in PURE_MODEL_DIRS for p in sorted((PACKAGE / d).glob("*.py"))]
    assert len(files) >= 10
    found = [f"{p.relative_to(PACKAGE.parent)}:{use}" for p in files
             for use in _io_uses(_parse(p), _module_name(p), p.name == "__init__.py")]  # fmt: skip
    assert not found, "I/O in endofed/models or endofed/ssl (ARCHITECTURE §5.2):\n" + "\n".join(found)


def test_models_do_not_import_self_supervision():
    models = PACKAGE / "models"
    found = [
        f"{_where(p, line)} {name}"
        for p, line, name in _library_imports()
        if p.parent == models and (name == "endofed.ssl" or name.startswith("endofed.ssl."))
    ]
    assert not found, f"endofed.models imports endofed.ssl: {found}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\nnp.save('x.npy', a)", ["2: np.save()"]),
        ("from torch import load\nload('w.pt')", ["2: load()"]),
        ("print(1)\nopen('f')", ["1: print()", "2: open()"]),
        ("p.write_text('x')\nfig.savefig(p)", ["1: p.write_text()", "2: fig.savefig()"]),
        ("import matplotlib.pyplot as plt", ["1: import matplotlib.pyplot"]),
        ("import logging\nlogging.basicConfig()\nlogging.getLogger(__name__).info('x')", ["2: logging.basicConfig()"]),
        ("from ..io.checkpoint import save_checkpoint", ["1: import endofed.io.checkpoint",
                                                         "1: import endofed.io.checkpoint.save_checkpoint"]),
        ("import torch\ntorch.nn.functional.relu(x)\nx.reshape(2)", []),
    ],
)  # fmt: skip
def test_the_io_detector_catches_what_it_should(source, expected):
    assert sorted(_io_uses(ast.parse(source), "endofed.models.mae")) == sorted(expected)

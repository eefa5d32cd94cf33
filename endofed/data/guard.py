"""One output-path guard: nothing endofed writes may land on, or inside, a site's source data.

Source data is read-only, always. A write target (the passport, a preview, the cache and work dir, the output
of ``data convert``, a run folder) is refused when its real path (symlinks followed, ``..`` resolved) is a
source file, or is, or lies inside, a source folder: ``data_root`` and the folder of every source image.
Checked before anything is written, so a refused command leaves every file as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from endofed.errors import DataError


@dataclass(frozen=True)
class Sources:
    """What must never be written to: source files and the folders that hold source data (real paths)."""

    files: frozenset[Path]
    folders: tuple[Path, ...]


def real(path: Path) -> Path:
    """``path`` with symlinks followed and ``..`` resolved, whether or not it exists yet."""
    return Path(path).expanduser().resolve(strict=False)


def collect_sources(
    images: Iterable[Path | None], files: Iterable[Path | None] = (), folders: Iterable[Path | None] = ()
) -> Sources:
    """The :class:`Sources` of a site's ``images``, other source ``files`` and source ``folders``.

    Each image's folder counts as a source folder (a manifest may list images anywhere); other files
    (manifest, labels) count as files only; ``folders`` are e.g. ``data_root``.
    """
    real_images = {real(p) for p in images if p is not None}
    real_files = real_images | {real(p) for p in files if p is not None}
    all_folders = {p.parent for p in real_images} | {real(p) for p in folders if p is not None}
    return Sources(files=frozenset(real_files), folders=tuple(sorted(all_folders)))


def source_conflict(target: Path, sources: Sources) -> str | None:
    """Why writing to ``target`` would touch source data, or ``None`` when it is safe."""
    resolved = real(target)
    if resolved in sources.files:
        return "is a source file"
    for folder in sources.folders:
        if resolved.is_relative_to(folder):  # the folder itself too
            return f"is inside the source data folder {folder}"
    return None


def refuse_source_writes(targets: Sequence[tuple[str, Path]], sources: Sources) -> None:
    """Raise one clear line for the first ``(what, path)`` target that would write into source data."""
    for what, target in targets:
        reason = source_conflict(target, sources)
        if reason is not None:
            raise DataError(
                f"{what} {target} {reason}: source data is read-only, choose a path outside it", code="source_write"
            )

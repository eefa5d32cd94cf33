"""The output-path guard: a write target may not be a source file or lie in a source folder (real paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from endofed.data.guard import collect_sources, refuse_source_writes, source_conflict
from endofed.errors import DataError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in ("data/sub-1", "scans/elsewhere", "work"):
        (tmp_path / folder).mkdir(parents=True)
    for image in ("data/sub-1/T1.nii.gz", "scans/elsewhere/T2.nii.gz"):
        (tmp_path / image).write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text("subject_id,t1,t2\n")
    return tmp_path


def _sources(tree: Path):
    images = [tree / "data/sub-1/T1.nii.gz", tree / "scans/elsewhere/T2.nii.gz", None]
    return collect_sources(images, files=[tree / "manifest.csv", None], folders=[tree / "data"])


def test_collect_sources_counts_image_folders_but_not_the_manifest_folder(tree: Path) -> None:
    sources, root = _sources(tree), tree.resolve()
    assert sources.folders == (root / "data", root / "data/sub-1", root / "scans/elsewhere")
    assert root / "manifest.csv" in sources.files and len(sources.files) == 3


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("data/sub-1/T1.nii.gz", "is a source file"),
        ("manifest.csv", "is a source file"),
        ("data", "is inside the source data folder"),  # the folder itself
        ("data/new/passport.json", "is inside the source data folder"),  # not yet existing
        ("scans/elsewhere/cache", "is inside the source data folder"),  # an image folder outside data_root
        ("work/../data/p.png", "is inside the source data folder"),  # .. resolved
    ],
)
def test_targets_on_or_inside_sources_are_refused(tree: Path, target: str, reason: str) -> None:
    assert source_conflict(tree / target, _sources(tree)).startswith(reason)


@pytest.mark.parametrize("target", ["work/passport.json", "scans/other", "passport.json", "data-copy/x"])
def test_targets_beside_the_sources_are_allowed(tree: Path, target: str) -> None:
    assert source_conflict(tree / target, _sources(tree)) is None


def test_a_symlink_into_the_data_is_followed(tree: Path) -> None:
    (tree / "work" / "link").symlink_to(tree / "data" / "sub-1")
    assert source_conflict(tree / "work/link/out.json", _sources(tree)) is not None
    (tree / "work" / "T1-link.nii.gz").symlink_to(tree / "data/sub-1/T1.nii.gz")
    assert source_conflict(tree / "work/T1-link.nii.gz", _sources(tree)) == "is a source file"


def test_refuse_names_what_and_where_in_one_line(tree: Path) -> None:
    refuse_source_writes([("work_dir", tree / "work")], _sources(tree))  # nothing raised
    with pytest.raises(DataError, match=r"^preview .*data/p\.png is inside the source data folder .*read-only") as err:
        refuse_source_writes([("work_dir", tree / "work"), ("preview", tree / "data/p.png")], _sources(tree))
    assert "\n" not in str(err.value) and err.value.code == "source_write"

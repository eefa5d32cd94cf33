"""Bad source files and a hostile environment, end to end through ``endofed data check``.

Three classes of issue 15: file-system failures that used to end in a traceback (a symlink loop, a read-only
or full work dir, a path through a file), unbounded reads (a zip bomb, a header declaring a huge volume in a
tiny file, a truncated file, an ROI that cannot be allocated), and files that used to be read silently wrong
(implausible spacing, complex or RGB voxels, the same scan re-saved under another subject id). Every case must
give one clear line and a non-zero exit, and leave the source data byte for byte unchanged.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from endofed.cli.common import LOG_DIR_ENV
from endofed.cli.main import main as endofed_main
from tests.bad_input_world import SETS, Setup, World, assert_one_clear_line, mount_tmpfs
from tests.helpers import TINY

T2 = Path("site") / "data" / "sub-001" / "T2.nii.gz"


def _check(w: World, *extra: str):
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS, *extra]


def _replace_t2(w: World, data: np.ndarray, affine: np.ndarray | None = None, header=None) -> None:
    """Overwrite subject 1's T2 with ``data`` (before the test's digest is taken: the setup builds the input)."""
    original = nib.load(w.root / T2)
    image = nib.Nifti1Image(data, original.affine if affine is None else affine, header)
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    nib.save(image, w.root / T2)


# -- file-system failures ------------------------------------------------------------------------------------


def manifest_symlink_loop(w: World):
    (w.root / "loop-a").symlink_to(w.root / "loop-b")
    (w.root / "loop-b").symlink_to(w.root / "loop-a")
    w.edit_site(manifest=str(w.root / "loop-a"))
    return _check(w)


def work_dir_symlink_loop(w: World):
    (w.root / "wl-a").symlink_to(w.root / "wl-b")
    (w.root / "wl-b").symlink_to(w.root / "wl-a")
    w.edit_site(work_dir=str(w.root / "wl-a" / "work"))
    return _check(w)


def work_dir_under_a_file(w: World):
    (w.root / "plain-file").write_text("not a folder")
    w.edit_site(work_dir=str(w.root / "plain-file" / "work"))
    return _check(w)


def work_dir_read_only(w: World):
    w.unmount = mount_tmpfs(w.root / "ro", 64, read_only=True)  # type: ignore[attr-defined]
    w.edit_site(work_dir=str(w.root / "ro" / "work"))
    return _check(w)


def work_dir_full(w: World):
    w.unmount = mount_tmpfs(w.root / "full", 64)  # type: ignore[attr-defined]
    w.edit_site(work_dir=str(w.root / "full" / "work"))
    return _check(w)


def passport_on_a_full_disk(w: World):
    w.unmount = mount_tmpfs(w.root / "tiny", 4)  # type: ignore[attr-defined]
    (w.root / "tiny" / "filler").write_bytes(b"\0" * 4096)
    return _check(w, "--passport", str(w.root / "tiny" / "passport.json"))


def pretrain_out_on_a_full_disk(w: World):
    w.unmount = mount_tmpfs(w.root / "small", 64)  # type: ignore[attr-defined]  # a tiny encoder is ~0.3 MB
    out = w.root / "small" / "pretrain"
    return endofed_main, ["pretrain", "--site", str(w.site_yaml), "--config", TINY, *SETS, "--out", str(out)]


def preview_as_csv(w: World):
    return _check(w, "--preview", str(w.root / "preview.csv"))


# -- unbounded reads -----------------------------------------------------------------------------------------


def roi_cannot_be_allocated(w: World):
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY,
                          "--set", "data.roi_size=[100000,100000,10000]"]  # fmt: skip


def gzip_bomb(w: World):
    _replace_t2(w, np.ones((400, 400, 210), np.int16))  # 67 MB of voxels in a 0.1 MB file
    return _check(w)


def _short_nii(w: World, shape: tuple[int, int, int], payload: int):
    """Replace subject 1's T2 by a ``.nii`` whose header declares ``shape`` but holds ``payload`` bytes."""
    header = nib.load(w.root / T2).header.copy()
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    path = w.root / "site" / "data" / "sub-001" / "T2.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * payload)
    (w.root / T2).unlink()
    manifest = w.root / "site" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("sub-001/T2.nii.gz", "sub-001/T2.nii"))
    return _check(w)


def header_declares_a_huge_volume(w: World):
    return _short_nii(w, (30000, 30000, 1000), 100)


def truncated_uncompressed_file(w: World):
    return _short_nii(w, (512, 512, 40), 5000)


# -- read silently wrong before --------------------------------------------------------------------------------


def _scaled_spacing(w: World, factor: float):
    original = nib.load(w.root / T2)
    affine = original.affine.copy()
    affine[:3, :3] *= factor
    _replace_t2(w, np.asanyarray(original.dataobj), affine)
    return _check(w)


def spacing_1e20(w: World):
    return _scaled_spacing(w, 1e20)


def spacing_in_metres(w: World):
    return _scaled_spacing(w, 1e-3)


def complex_voxels(w: World):
    data = np.asanyarray(nib.load(w.root / T2).dataobj).astype(np.complex64) * (1 + 1j)
    _replace_t2(w, data)
    return _check(w)


def rgb_voxels(w: World):
    grey = np.asanyarray(nib.load(w.root / T2).dataobj)
    rgb = np.zeros(grey.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = rgb["G"] = rgb["B"] = np.clip(grey // 8, 0, 255)
    _replace_t2(w, rgb)
    return _check(w)


def image_is_a_fifo(w: World):
    import os

    (w.root / T2).unlink()
    os.mkfifo(w.root / T2)  # reading it would block for ever
    return _check(w)


def same_scan_resaved_under_another_subject(w: World):
    original = nib.load(w.root / T2)
    header = original.header.copy()
    header["descrip"] = b"exported again"
    image = nib.Nifti1Image(np.asanyarray(original.dataobj), original.affine, header)
    nib.save(image, w.root / "site" / "data" / "sub-002" / "T2.nii.gz")
    return _check(w)


CASES: dict[str, tuple[Setup, str]] = {
    "manifest is a symlink loop": (manifest_symlink_loop, r"error: .*loop-a: symbolic link loop"),
    "work_dir through a symlink loop": (work_dir_symlink_loop, r"error: .*wl-a.*symbolic link loop"),
    "work_dir under a regular file": (work_dir_under_a_file, r"error: .*plain-file.*: a part of the path is not a"),
    "work_dir on a read-only file system": (work_dir_read_only, r"error: .*ro/work.*: read-only file system"),
    "work_dir on a full disk": (work_dir_full, r"error: .*full/work/cache/.*: no space left on the device"),
    "passport on a full disk": (passport_on_a_full_disk, r"error: .*tiny/.*passport.*: no space left on the device"),
    "pretrain --out on a full disk": (pretrain_out_on_a_full_disk, r"error: .*small/pretrain/.*: no space left on"),
    "--preview with a .csv suffix": (preview_as_csv, r"error: cannot draw a figure as \.csv: .*preview\.csv"),
    "--set ROI that cannot be allocated": (roi_cannot_be_allocated, r"yaml \+ --set overrides: data\.roi_size .*above"),
    "gzip bomb (67 MB in 0.1 MB)": (gzip_bomb, r"sub-001/T2\.nii\.gz would inflate from .* above data\.max_inflation"),
    "header declares 9e11 voxels": (header_declares_a_huge_volume, r"declares 900,000,000,000 voxels, above"),
    "truncated .nii": (truncated_uncompressed_file, r"truncated image: .*declares 20,971,520 bytes"),
    "voxel spacing 1e20 mm": (spacing_1e20, r"implausible voxel spacing .*e\+20 .*sub-001/T2"),
    "voxel spacing in metres": (spacing_in_metres, r"implausible voxel spacing 0\.00.*sub-001/T2"),
    "complex-valued T2": (complex_voxels, r"complex-valued voxels \(complex64\) in .*sub-001/T2"),
    "RGB T2": (rgb_voxels, r"colour \(RGB\) image in .*sub-001/T2"),
    "T2 is a FIFO": (image_is_a_fifo, r"sub-001: not a regular file \(a folder, FIFO or device\): .*T2\.nii\.gz"),
    "same scan re-saved under another subject": (
        same_scan_resaved_under_another_subject,
        r"sub-002/T2\.nii\.gz has the same voxels as a file of subject 'sub-001'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_changes_nothing(case, world, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path / "error-logs"))
    setup, expected = CASES[case]
    try:
        assert_one_clear_line(case, setup, expected, world, capsys)
    finally:
        unmount = getattr(world, "unmount", None)
        if unmount is not None:
            unmount()
    assert not (tmp_path / "error-logs").exists(), "an expected failure was treated as a bug"

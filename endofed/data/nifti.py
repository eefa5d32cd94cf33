"""Read one NIfTI volume safely: every way a real file can be wrong becomes a one-line ``DataError``.

Source files are only ever opened for reading; nothing here writes.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from endofed.config import DataConfig
from endofed.data.geometry import grid_extent_mm, orientation_code, voxel_spacing
from endofed.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Below this many declared bytes of voxel data a .nii.gz is read whatever its compression ratio: a small
# constant test volume compresses 1000-fold and is harmless; the inflation bound is for the gigabytes.
INFLATION_FLOOR_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Volume:
    """A 3D image in scanner units with its voxel-to-world affine.

    Attributes:
        array: ``(X, Y, Z)`` float32 intensities (scl_slope/inter applied).
        affine: ``(4, 4)`` voxel index -> RAS+ mm.
        source_dtype: on-disk data type, e.g. ``"int16"``.
    """

    array: np.ndarray
    affine: np.ndarray
    source_dtype: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(X, Y, Z)``."""
        x, y, z = self.array.shape
        return (x, y, z)

    @property
    def orientation(self) -> str:
        """Orientation code of the header affine, e.g. ``"LAS"``."""
        return orientation_code(self.affine)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (mm) along each array axis."""
        return voxel_spacing(self.affine)


def _open_image(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open the header (lazily) and make sure the file is a NIfTI image."""
    if not path.exists():
        raise DataError(f"missing file: {path}", "missing_file")
    if not path.is_file():
        raise DataError(f"not a file: {path}", "missing_file")
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DataError(f"not a NIfTI file (expected .nii or .nii.gz): {path}", "not_nifti")
    try:
        image = nib.load(str(path))
    except (ImageFileError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        kind = "corrupt or truncated gzip" if path.name.endswith(".gz") else "not a NIfTI file"
        raise DataError(f"{kind}: {path} ({exc})", "unreadable") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read NIfTI header of {path}: {exc}", "unreadable") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"not a NIfTI file ({type(image).__name__}): {path}", "not_nifti")
    return image


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """Accept 3D shapes, and 4D/5D ones whose extra dimensions are all 1; refuse real 4D series."""
    if len(shape) < 3:
        raise DataError(f"expected a 3D volume, got shape {shape} in {path}", "not_3d")
    if any(n != 1 for n in shape[3:]):
        raise DataError(
            f"expected a 3D volume, got a {len(shape)}D series of shape {shape} in {path} "
            "(e.g. DWI or dynamic; export the one 3D volume to use)",
            "not_3d",
        )
    x, y, z = shape[:3]
    if min(x, y, z) < 1:
        raise DataError(f"empty volume of shape {shape} in {path}", "not_3d")
    return (x, y, z)


def check_voxel_type(dtype: np.dtype, path: Path) -> None:
    """Accept real scalar voxels (integers, floats); refuse complex, colour and other structured types by name."""
    if dtype.names is not None:
        kind = "a colour (RGB) image" if set(dtype.names) >= {"R", "G", "B"} else f"structured voxels {dtype.names}"
        raise DataError(f"{kind} in {path}: expected one grey value per voxel (an MR magnitude image)", "bad_dtype")
    if dtype.kind == "c":
        raise DataError(
            f"complex-valued voxels ({dtype}) in {path}: export the magnitude image, not raw or phase data",
            "bad_dtype",
        )
    if dtype.kind not in "iuf":
        raise DataError(f"unsupported voxel type {dtype} in {path}: expected integers or floats", "bad_dtype")


def check_declared_size(
    n_voxels: int, itemsize: int, data_offset: int, file_bytes: int, gzipped: bool, cfg: DataConfig, path: Path
) -> None:
    """Refuse a header whose declared volume is too large, or impossible for the file's size, before reading it.

    Args:
        n_voxels: voxels the header declares (product of its dimensions).
        itemsize: bytes per voxel on disk.
        data_offset: where the voxel data starts (``vox_offset``).
        file_bytes: size of the file on disk.
        gzipped: whether the file is a ``.nii.gz`` (its size bounds the data only through the inflation bound).
        cfg: ``max_voxels`` and ``max_inflation``.
        path: the file (for the message).
    """
    if n_voxels > cfg.max_voxels:
        raise DataError(
            f"header of {path} declares {n_voxels:,} voxels, above data.max_voxels = {cfg.max_voxels:,} "
            "(raise it if this volume is genuine)",
            "too_large",
        )
    data_bytes = n_voxels * itemsize
    if gzipped:
        if data_bytes > INFLATION_FLOOR_BYTES and data_bytes > cfg.max_inflation * file_bytes:
            raise DataError(
                f"{path} would inflate from {file_bytes:,} to {data_bytes:,} bytes ({data_bytes / file_bytes:.0f}x, "
                f"above data.max_inflation = {cfg.max_inflation:g}x): not read (a corrupt header or a zip bomb)",
                "too_large",
            )
    elif data_offset + data_bytes > file_bytes:
        raise DataError(
            f"truncated image: the header of {path} declares {data_bytes:,} bytes of voxels from byte "
            f"{data_offset:,}, but the file has {file_bytes:,} bytes",
            "unreadable",
        )


def check_geometry(spacing: np.ndarray, fov: np.ndarray, cfg: DataConfig, path: Path) -> None:
    """Refuse voxel sizes and fields of view outside ``cfg``'s clinical ranges (e.g. spacing written in metres)."""
    for what, values, (lo, hi), key in (
        ("voxel spacing", spacing, cfg.spacing_range_mm, "spacing_range_mm"),
        ("field of view", fov, cfg.fov_range_mm, "fov_range_mm"),
    ):
        if not all(lo <= v <= hi for v in values):
            shown = " x ".join(f"{v:.4g}" for v in values)
            raise DataError(
                f"implausible {what} {shown} mm in {path}: outside data.{key} = [{lo:g}, {hi:g}] mm "
                "(header units wrong? widen the range if the scan is genuine)",
                "implausible_geometry",
            )


def load_volume(path: str | Path, cfg: DataConfig | None = None) -> Volume:
    """Load a 3D NIfTI volume (``.nii`` or ``.nii.gz``) and check it is usable.

    Args:
        path: the file (only ever opened for reading).
        cfg: the input checks (``max_voxels``, ``max_inflation``, spacing and FOV ranges; default: defaults).

    Raises:
        DataError: missing file, not NIfTI, corrupt/truncated gzip, 4D series, complex/RGB voxels, a declared
            size too large or impossible for the file, singular affine, implausible spacing or FOV, all-zero
            or non-finite intensities. The message names the file.
    """
    path = Path(path)
    cfg = cfg or DataConfig()
    image = _open_image(path)
    shape = _spatial_shape(tuple(int(n) for n in image.shape), path)
    dtype = image.header.get_data_dtype()
    check_voxel_type(dtype, path)
    check_declared_size(int(np.prod(image.shape, dtype=np.int64)), dtype.itemsize,
                        int(getattr(image.dataobj, "offset", 0)), path.stat().st_size, path.name.endswith(".gz"),
                        cfg, path)  # fmt: skip
    if int(image.header["sform_code"]) == 0 and int(image.header["qform_code"]) == 0:
        raise DataError(
            f"no world coordinates in {path} (sform and qform codes are both 0): cannot place it relative "
            "to the other modality; re-export it from DICOM (e.g. endofed data convert)",
            "bad_affine",
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"invalid (singular or non-finite) affine in {path}", "bad_affine")
    check_geometry(voxel_spacing(affine), grid_extent_mm(affine, shape), cfg, path)
    try:
        array = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except (gzip.BadGzipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"corrupt or truncated image data: {path} ({exc})", "unreadable") from None
    if not np.all(np.isfinite(array)):
        raise DataError(f"volume contains NaN or Inf values: {path}", "non_finite")
    if not np.any(array):
        raise DataError(f"volume is all zero: {path}", "all_zero")
    source_dtype = str(dtype)
    return Volume(array=array, affine=affine, source_dtype=source_dtype)

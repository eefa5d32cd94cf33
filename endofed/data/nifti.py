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

from endofed.data.geometry import orientation_code, voxel_spacing
from endofed.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


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


def load_volume(path: str | Path) -> Volume:
    """Load a 3D NIfTI volume (``.nii`` or ``.nii.gz``) and check it is usable.

    Raises:
        DataError: missing file, not NIfTI, corrupt/truncated gzip, 4D series, singular affine,
            all-zero or non-finite intensities. The message names the file.
    """
    path = Path(path)
    image = _open_image(path)
    shape = _spatial_shape(tuple(int(n) for n in image.shape), path)
    if int(image.header["sform_code"]) == 0 and int(image.header["qform_code"]) == 0:
        raise DataError(
            f"no world coordinates in {path} (sform and qform codes are both 0): cannot place it relative "
            "to the other modality; re-export it from DICOM (e.g. endofed data convert)",
            "bad_affine",
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"invalid (singular or non-finite) affine in {path}", "bad_affine")
    try:
        array = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except (gzip.BadGzipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"corrupt or truncated image data: {path} ({exc})", "unreadable") from None
    if not np.all(np.isfinite(array)):
        raise DataError(f"volume contains NaN or Inf values: {path}", "non_finite")
    if not np.any(array):
        raise DataError(f"volume is all zero: {path}", "all_zero")
    source_dtype = str(image.header.get_data_dtype())
    return Volume(array=array, affine=affine, source_dtype=source_dtype)

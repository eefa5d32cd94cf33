"""Render a subject's scene as a scanner acquires it: contrast, partial volume, bias, ghosting, Rician noise.

For each sequence: paint the scene on a fine world grid covering that sequence's field of view (``shapes``),
turn tissue labels into signal with the sequence's equation and the subject's T1/T2/PD (``signal``),
integrate over each acquired voxel (box window: in-plane size x slice thickness; the main partial-volume
effect of thick slices), sample at the acquired voxel centres, then apply a smooth multiplicative bias
field, an optional motion ghost along phase encoding, Rician noise and an arbitrary int16 scaling.

Per-subject acquisition variation (:class:`AcquisitionDraws`): an oblique grid (the slices tilted about an
in-plane axis through the grid centre, written into the affine; the box window then lies along the tilted
axes) and whether this scan shows the sequence's ghost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from endofed.data.geometry import grid_centre_mm, make_affine, voxel_spacing
from endofed.synth.anatomy import Scene
from endofed.synth.profile import SequenceProfile
from endofed.synth.shapes import FineGrid, paint
from endofed.synth.signal import spin_echo, spoiled_gradient_echo
from endofed.synth.tissues import T, TissueTable

_WORLD_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


@dataclass(frozen=True)
class Acquisition:
    """One rendered sequence.

    Attributes:
        image: ``shape`` int16 scanner units.
        findings: ``shape`` uint8 ground-truth finding label of each acquired voxel (nearest fine voxel).
        tissues: ``shape`` uint8 tissue label of each acquired voxel (nearest fine voxel).
        affine: voxel-to-world affine written to the NIfTI header (oblique when ``tilt_deg`` is not 0).
        tilt_deg: signed tilt of the slices off the profile's axes (0 = axis-aligned).
        ghosting: amplitude of the motion ghost this scan shows (0 = none).
    """

    image: np.ndarray
    findings: np.ndarray
    tissues: np.ndarray
    affine: np.ndarray
    tilt_deg: float
    ghosting: float


@dataclass(frozen=True)
class AcquisitionDraws:
    """Per-subject variation of one sequence's acquisition (the defaults: today's axis-aligned, ghosted scan).

    Attributes:
        tilt_deg: signed rotation of the grid about its tilt axis (0 = axis-aligned).
        tilt_azimuth_deg: direction of the tilt axis in the slice plane: 0 = along array axis 0, 90 = axis 1.
        ghosted: whether the scan shows the sequence's motion ghost (``SequenceProfile.ghosting``).
    """

    tilt_deg: float = 0.0
    tilt_azimuth_deg: float = 0.0
    ghosted: bool = True


def draw_acquisition(sequence: SequenceProfile, rng: np.random.Generator) -> AcquisitionDraws:
    """Draw a subject's tilt (uniform in +-``oblique_deg``, random in-plane axis) and ghost (``ghosting_rate``).

    Always the same three draws whatever the settings, so one knob never shifts another's values.
    """
    tilt = float(rng.uniform(-1.0, 1.0)) * sequence.oblique_deg
    azimuth = float(rng.uniform(0.0, 180.0))
    ghosted = bool(rng.random() < sequence.ghosting_rate)
    return AcquisitionDraws(tilt_deg=tilt, tilt_azimuth_deg=azimuth, ghosted=ghosted)


NO_VARIATION = AcquisitionDraws()  # axis-aligned, the sequence's ghost (if any) shown: every scan before the knobs


def rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle_deg`` about ``axis`` (right-handed; Rodrigues' formula)."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    angle = np.deg2rad(angle_deg)
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def tilt_affine(affine: np.ndarray, shape: tuple[int, int, int], tilt_deg: float, azimuth_deg: float) -> np.ndarray:
    """``affine`` rotated by ``tilt_deg`` about an in-plane axis through its grid centre (centre unchanged).

    The axis lies in the plane of array axes 0 and 1 at ``azimuth_deg`` from axis 0, so the slice direction
    (array axis 2) leaves its original direction by exactly ``|tilt_deg|`` degrees.
    """
    units = affine[:3, :3] / voxel_spacing(affine)
    azimuth = np.deg2rad(azimuth_deg)
    rotation = rotation_about(np.cos(azimuth) * units[:, 0] + np.sin(azimuth) * units[:, 1], tilt_deg)
    out = np.array(affine, dtype=float)
    out[:3, :3] = rotation @ affine[:3, :3]
    out[:3, 3] = grid_centre_mm(affine, shape) - out[:3, :3] @ ((np.asarray(shape, dtype=float) - 1.0) / 2.0)
    return out


def acquisition_grid(
    sequence: SequenceProfile, centre_mm: np.ndarray, draws: AcquisitionDraws = NO_VARIATION
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of a sequence's acquired grid, centred at ``centre_mm`` (tilted by ``draws``)."""
    shape = (
        max(2, round(sequence.fov_mm[0] / sequence.in_plane_mm)),
        max(2, round(sequence.fov_mm[1] / sequence.in_plane_mm)),
        int(sequence.slices),
    )
    spacing = (sequence.in_plane_mm, sequence.in_plane_mm, sequence.slice_mm + sequence.gap_mm)
    affine = make_affine(sequence.orientation, spacing, shape, tuple(centre_mm))
    if draws.tilt_deg != 0.0:
        affine = tilt_affine(affine, shape, draws.tilt_deg, draws.tilt_azimuth_deg)
    return affine, shape


def is_axis_aligned(affine: np.ndarray) -> bool:
    """Whether every array axis of ``affine`` runs along one world axis (a permutation with flips)."""
    linear = np.abs(np.asarray(affine, dtype=float)[:3, :3])
    return int(np.count_nonzero(linear > 1e-9 * linear.max())) == 3


def fine_grid_for(affine: np.ndarray, shape: tuple[int, int, int], spacing: float, margin_mm: float) -> FineGrid:
    """A world-aligned fine grid of ``spacing`` mm covering the acquired voxel centres plus ``margin_mm``.

    The margin is rounded to whole fine voxels, so when ``spacing`` equals the acquired in-plane spacing the
    fine voxel centres coincide with the acquired ones in-plane (no interpolation there).
    """
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in
                        (0, shape[2] - 1)])  # fmt: skip
    world = (affine @ corners.T).T[:, :3]
    margin = spacing * (np.ceil(margin_mm / spacing) + 1)
    low, high = world.min(axis=0) - margin, world.max(axis=0) + margin
    size = np.ceil((high - low) / spacing).astype(int) + 1
    return FineGrid(origin=low, spacing=spacing, shape=(int(size[0]), int(size[1]), int(size[2])))


def render_labels(scene: Scene, grid: FineGrid) -> tuple[np.ndarray, np.ndarray]:
    """Paint the scene: ``(tissue labels, finding labels)``, both uint8 of ``grid.shape``."""
    labels = np.zeros(grid.shape, dtype=np.uint8)
    findings = np.zeros(grid.shape, dtype=np.uint8)
    for step in scene.steps:
        paint(labels, findings, grid, step.shape, int(step.tissue), None if step.finding is None else int(step.finding))
    return labels, findings


def tissue_signal(sequence: SequenceProfile, tissues: TissueTable) -> np.ndarray:
    """Signal of every tissue label for this sequence (array indexed by label)."""
    if sequence.kind == "t1_gre":
        signal = spoiled_gradient_echo(
            tissues.pd, tissues.t1, tissues.t2, sequence.tr_ms, sequence.te_ms, sequence.flip_deg
        )
    else:
        signal = spin_echo(tissues.pd, tissues.t1, tissues.t2, sequence.tr_ms, sequence.te_ms)
    signal[T.AIR] = 0.0
    signal[T.BOWEL_GAS] = 0.0
    return signal.astype(np.float32)


def smooth_field(
    affine: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator, amplitude: float
) -> np.ndarray:
    """A smooth multiplicative field ``exp(quadratic polynomial of world position)`` spanning about +-amplitude."""
    linear, quadratic = rng.normal(0, 1, 3), rng.normal(0, 0.5, 3)
    log_field: np.ndarray | float = 0.0
    for r in range(3):  # world axis r, built from the array axes that move along it (one for aligned grids)
        coord: np.ndarray | float = float(affine[r, 3])
        for c in range(3):
            if abs(affine[r, c]) > 1e-9:
                view = [1, 1, 1]
                view[c] = -1
                coord = coord + affine[r, c] * np.arange(shape[c], dtype=np.float32).reshape(view)
        scaled = np.asarray(coord, dtype=np.float32) / 150.0  # roughly [-1, 1] over a pelvis
        log_field = log_field + linear[r] * scaled + quadratic[r] * scaled**2
    field = np.broadcast_to(np.asarray(log_field, dtype=np.float32), shape)
    spread = float(field.max() - field.min()) or 1.0
    return np.exp(np.log1p(amplitude) * 2.0 * (field - field.mean()) / spread).astype(np.float32)


def _integrate_and_sample(
    fine: np.ndarray, grid: FineGrid, sequence: SequenceProfile, affine: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """Average ``fine`` over each acquired voxel (box window) and sample it at the acquired voxel centres."""
    if not is_axis_aligned(affine):
        return _integrate_oblique(fine, grid, sequence, affine, shape)
    window = [1, 1, 1]
    extents = (sequence.in_plane_mm, sequence.in_plane_mm, sequence.slice_mm)
    for letter, extent in zip(sequence.orientation.upper(), extents, strict=True):
        window[_WORLD_AXIS[letter]] = max(1, int(round(extent / grid.spacing)))
    blurred = ndimage.uniform_filter(fine, size=window, mode="nearest") if max(window) > 1 else fine
    return _sample(blurred, grid, affine, shape, order=1)


def _sample(
    fine: np.ndarray, grid: FineGrid, affine: np.ndarray, shape: tuple[int, int, int], order: int
) -> np.ndarray:
    """Values of a fine-grid array at the voxel centres of an acquired grid: linear (``order=1``) or nearest.

    When both grids are aligned with the world axes (the acquired one up to a permutation and flips), the
    sampling separates into one 1D interpolation per axis; an oblique grid is sampled point by point.
    """
    if not is_axis_aligned(affine):
        coords = _fine_coordinates(grid, affine, shape)
        return ndimage.map_coordinates(fine, coords, order=order, mode="nearest").reshape(shape)
    to_fine = np.linalg.inv(grid.affine()) @ affine
    world_axes = [int(np.argmax(np.abs(to_fine[:3, a]))) for a in range(3)]
    out = np.transpose(fine, world_axes)  # fine array with its axes in acquisition order
    shrink = [fine.shape[world_axes[a]] / shape[a] for a in range(3)]
    for axis in sorted(range(3), key=lambda a: -shrink[a]):  # most-reducing axis first: less work after
        w = world_axes[axis]
        coords = to_fine[w, axis] * np.arange(shape[axis]) + to_fine[w, 3]
        coords = np.clip(coords, 0, fine.shape[w] - 1)
        if order == 0:
            out = np.take(out, np.floor(coords + 0.5).astype(np.intp), axis=axis)  # ties round up
            continue
        low = np.minimum(np.floor(coords).astype(np.intp), fine.shape[w] - 2)
        frac = (coords - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, low, axis=axis) * (1 - frac) + np.take(out, low + 1, axis=axis) * frac
    return np.ascontiguousarray(out)


def _fine_coordinates(grid: FineGrid, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``(3, N)`` fine-grid index coordinates of the acquired voxel centres (C order over ``shape``)."""
    to_fine = np.linalg.inv(grid.affine()) @ affine
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return to_fine[:3, :3].astype(np.float32) @ ijk + to_fine[:3, 3:4].astype(np.float32)


def _integrate_oblique(
    fine: np.ndarray, grid: FineGrid, sequence: SequenceProfile, affine: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """The box window of an oblique grid: the mean of linear samples spaced one fine voxel along its axes.

    Per acquired axis ``a`` the window holds ``round(extent_a / spacing)`` samples (at least one), like the
    aligned path's ``uniform_filter``, but along the tilted axes (the slice thickness along the tilted slices).
    """
    units = affine[:3, :3] / voxel_spacing(affine)
    steps = []
    for a, extent in enumerate((sequence.in_plane_mm, sequence.in_plane_mm, sequence.slice_mm)):
        count = max(1, int(round(extent / grid.spacing)))
        steps.append([units[:, a] * (m - (count - 1) / 2.0) for m in range(count)])  # in fine voxels
    centres = _fine_coordinates(grid, affine, shape)
    total = np.zeros(centres.shape[1], dtype=np.float32)
    offsets = [u + v + w for u in steps[0] for v in steps[1] for w in steps[2]]
    for offset in offsets:
        points = centres + offset.astype(np.float32)[:, None]
        total += ndimage.map_coordinates(fine, points, order=1, mode="nearest", output=np.float32)
    return (total / np.float32(len(offsets))).reshape(shape)


def acquire(
    scene: Scene,
    sequence: SequenceProfile,
    tissues: TissueTable,
    centre_mm: np.ndarray,
    rng: np.random.Generator,
    draws: AcquisitionDraws = NO_VARIATION,
) -> Acquisition:
    """Render one sequence of one subject into int16 scanner units plus its ground-truth findings map.

    ``draws`` (tilt, ghost) come from a stream of their own; ``rng`` draws the same values whatever they are.
    """
    affine, shape = acquisition_grid(sequence, centre_mm, draws)
    spacing = min(sequence.in_plane_mm, sequence.slice_mm)
    grid = fine_grid_for(affine, shape, spacing, margin_mm=max(sequence.in_plane_mm, sequence.slice_mm) / 2)
    labels, findings = render_labels(scene, grid)
    signal = tissue_signal(sequence, tissues)
    fat = tissues.fat.astype(np.float32) if sequence.fat_suppression else np.zeros(len(signal), np.float32)
    clean = _integrate_and_sample((signal * (1 - fat))[labels], grid, sequence, affine, shape)
    if sequence.fat_suppression:
        residual = rng.uniform(*sequence.fat_residual) * smooth_field(affine, shape, rng, 0.5)
        clean += residual * _integrate_and_sample((signal * fat)[labels], grid, sequence, affine, shape)
    magnitude = corrupt(clean, sequence, affine, shape, float(signal[T.MUSCLE]), rng, draws.ghosted)
    truth = _sample(findings, grid, affine, shape, order=0).astype(np.uint8)
    tissue_map = _sample(labels, grid, affine, shape, order=0).astype(np.uint8)
    ghosting = sequence.ghosting if draws.ghosted else 0.0
    return Acquisition(magnitude, truth, tissue_map, affine, tilt_deg=draws.tilt_deg, ghosting=ghosting)


def corrupt(
    clean: np.ndarray,
    sequence: SequenceProfile,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    reference_signal: float,
    rng: np.random.Generator,
    ghosted: bool = True,
) -> np.ndarray:
    """Bias field, motion ghost (if ``ghosted``), Rician noise (SNR of ``reference_signal``), int16 scanner units.

    The ghost's shift is drawn even for a scan without the ghost, so the noise that follows is the same.
    """
    image = clean * smooth_field(affine, shape, rng, sequence.bias_amplitude)
    if sequence.ghosting > 0:  # replica shifted along phase encoding (array axis 1)
        shift = shape[1] // int(rng.integers(2, 5))
        if ghosted:
            image = image + sequence.ghosting * np.roll(image, shift, axis=1)
    sigma = np.float32(reference_signal / sequence.snr)
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    noisy = np.hypot(real, sigma * rng.standard_normal(shape, dtype=np.float32))
    top = float(np.percentile(noisy.ravel()[::7], 99.5)) or 1.0  # a subsample is plenty for a scale
    scale = rng.uniform(*sequence.scanner_max) / top
    return np.clip(np.round(noisy * scale), 0, 32767).astype(np.int16)

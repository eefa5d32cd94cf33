"""Quality checks of rendered subjects: intensity of each finding against reference tissues (pure numpy).

Used by the tests and the honesty report to confirm that every sign has the intended contrast in both
modalities, e.g. an endometrioma brighter than muscle on T1 and darker than urine on T2.
"""

from __future__ import annotations

import numpy as np

from endofed.synth.anatomy import F
from endofed.synth.render import Acquisition
from endofed.synth.tissues import T

REFERENCE_TISSUES = (T.MUSCLE, T.MYOMETRIUM, T.URINE, T.FAT, T.OVARY_STROMA)


def region_median(image: np.ndarray, mask: np.ndarray) -> float:
    """Median intensity inside ``mask`` (NaN when empty)."""
    return float(np.median(image[mask])) if mask.any() else float("nan")


def contrast_table(acquisition: Acquisition) -> dict[str, float]:
    """Median intensity of every finding present and of the reference tissues, keyed by lower-case name.

    Finding voxels are taken from the findings map; reference tissue voxels exclude finding voxels.
    """
    image = acquisition.image.astype(np.float64)
    free = acquisition.findings == 0
    table = {t.name.lower(): region_median(image, (acquisition.tissues == t) & free) for t in REFERENCE_TISSUES}
    for finding in F:
        if finding != F.NONE:
            mask = acquisition.findings == finding
            if mask.any():
                table[finding.name.lower()] = region_median(image, mask)
    return table

"""The names of the masking modes (pure: no torch), so that the config can validate ``pretrain.mask_mode``.

:data:`endofed.ssl.masking.MASK_FUNCTIONS` maps each name to the function that draws its mask; a test checks
that the table has exactly these names, in this order. See :mod:`endofed.ssl.masking` for what each mode hides.
"""

from __future__ import annotations

SHARED, INDEPENDENT, MODALITY_DROP = "shared", "independent", "modality_drop"
MASK_MODES = (SHARED, INDEPENDENT, MODALITY_DROP)

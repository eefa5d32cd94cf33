"""Streaming weighted mean of site updates: memory independent of the number of sites, result independent of order.

Flower's strategies hold every reply before averaging, so a ViT-B encoder (347 MB in fp32) at 100 sites needs
about 35 GB on the server. :class:`ExactSum` instead folds each update in as it arrives and keeps two float64
arrays per tensor (four fp32 model sizes), whatever the number of sites.

**Why the result does not depend on arrival order.** A site's term is ``n * w``: an integer weight ``n`` (its
training volumes, at most 10,000 < 2**14) times a float32 value (24 significant bits), so each term is exact in
float64 (38 <= 53 bits). The running sum is kept as an unevaluated pair ``hi + lo`` (TwoSum, Knuth): every
addition's rounding error goes into ``lo`` exactly, so ``hi + lo`` is the exact sum while ``lo`` itself needs no
rounding, i.e. while the terms of one coordinate span less than about 2**75 in magnitude (with 100 sites;
weights that all started from one global lie within a few powers of two of each other, and exact zeros are
free). An exact sum has one value whatever the order, and :meth:`ExactSum.mean` is a fixed function of it:
``float32(fl64(hi + lo) / total)``, bitwise the same for every order of the same updates. Beyond that span the
mean can differ by one float32 ulp between orders; it is never less accurate than a float64 sum.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MAX_WEIGHT = 2**14  # n * float32 is exact in float64 up to here (24 + 14 bits <= 53)


class ExactSum:
    """Running ``sum_i n_i * w_i`` over states ``w_i`` with integer weights ``n_i`` (see the module doc)."""

    def __init__(self) -> None:
        self.total = 0  # sum of the weights
        self.count = 0  # states added
        self._hi: dict[str, np.ndarray] = {}
        self._lo: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def add(self, state: Mapping[str, np.ndarray], weight: int) -> None:
        """Fold in one state with its integer weight.

        A term ``weight * value`` is exact below :data:`MAX_WEIGHT` and rounded once (the same in any order) above.

        Raises:
            ValueError: a weight that is not a positive integer, a state whose keys or shapes differ from the
                first one's, or a value that is not float32.
        """
        if not isinstance(weight, int | np.integer) or weight < 1:
            raise ValueError(f"weight must be a positive integer, got {weight!r}")
        if not self._hi:
            self._shapes = {key: tuple(np.shape(value)) for key, value in state.items()}
            self._hi = {key: np.zeros(shape) for key, shape in self._shapes.items()}
            self._lo = {key: np.zeros(shape) for key, shape in self._shapes.items()}
        if set(state) != set(self._shapes):
            raise ValueError(f"state keys differ from the first state's: {sorted(set(state) ^ set(self._shapes))}")
        for key, value in state.items():
            array = np.asarray(value)
            if array.dtype != np.float32 or array.shape != self._shapes[key]:
                raise ValueError(
                    f"{key!r} must be float32 of shape {self._shapes[key]}, got {array.dtype} {array.shape}"
                )
            self._hi[key] = _two_sum_into(self._hi[key], array, int(weight), self._lo[key])
        self.total += int(weight)
        self.count += 1

    def mean(self) -> dict[str, np.ndarray]:
        """``float32(fl64(hi + lo) / total)`` per tensor: the weighted mean, independent of the order of :meth:`add`.

        Raises:
            ValueError: nothing was added.
        """
        if not self.count:
            raise ValueError("no state was added")
        return {key: ((self._hi[key] + self._lo[key]) / self.total).astype(np.float32) for key in self._hi}


def _two_sum_into(hi: np.ndarray, values: np.ndarray, weight: int, lo: np.ndarray) -> np.ndarray:
    """``s = fl(hi + weight * values)``; adds the exact rounding error ``(hi + t) - s`` to ``lo`` in place.

    Knuth's TwoSum (no branch on magnitudes) with ``t = weight * values`` in float64, three temporaries.
    Example: ``hi = 1.0, t = 2**-60`` gives ``s = 1.0`` and adds ``2**-60`` to ``lo``.
    """
    t = np.multiply(values, weight, dtype=np.float64)
    s = hi + t
    e = s - hi  # t as it went into s
    np.subtract(t, e, out=t)  # t's rounding error
    np.subtract(s, e, out=e)  # hi as it went into s ...
    np.subtract(hi, e, out=e)  # ... and hi's rounding error
    np.add(e, t, out=e)
    np.add(lo, e, out=lo)
    return s

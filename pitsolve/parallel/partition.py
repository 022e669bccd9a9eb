r"""Overlapping windows of the time axis (MATH.md §7).

Steps are indexed ``0 .. T-1`` (array rows; row ``i`` holds :math:`h_{i+1}`). Window ``p``
(``0 .. P-1``) *owns* the rows ``own[p] = [o_p, o_{p+1})`` — every row is owned by exactly one
window — and *covers* ``[s_p, o_{p+1})`` with ``s_p = max(o_p - δ, 0)``: it starts δ rows
before its owned part so that the transient from a wrong initial state decays before the rows
it owns (restricted additive Schwarz). Neighbours ``p`` and ``p + 1`` therefore overlap on the
δ rows ``[o_{p+1} - δ, o_{p+1})``, the last δ rows owned by ``p``. The initial state of window
``p`` is the state at row ``s_p - 1``, owned by window ``p - 1`` (or ``h0`` for ``p = 0``).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Partition"]


@dataclass(frozen=True)
class Partition:
    """``P`` windows over ``T`` steps with left overlap ``overlap``.

    Build with :meth:`uniform` or :meth:`from_boundaries`; both validate.

    Attributes
    ----------
    T, overlap
        number of steps and overlap δ in steps.
    bounds
        ``(o_0 = 0, o_1, ..., o_P = T)``: window ``p`` owns rows ``bounds[p]:bounds[p+1]``.
    """

    T: int
    overlap: int
    bounds: tuple[int, ...]

    @classmethod
    def uniform(cls, T: int, windows: int, overlap: int) -> Partition:
        """``windows`` windows of near-equal owned length (the first ``T % windows`` one longer)."""
        T = _index(T, "T", minimum=1)
        P = _index(windows, "windows", minimum=1)
        if P > T:
            raise ValueError(f"windows={P} exceeds the number of steps T={T}; use windows ≤ T")
        q, r = divmod(T, P)
        bounds = [0]
        for p in range(P):
            bounds.append(bounds[-1] + q + (1 if p < r else 0))
        return cls._checked(T, overlap, tuple(bounds))

    @classmethod
    def from_boundaries(cls, T: int, boundaries: Sequence[int], overlap: int) -> Partition:
        """Windows split at the given interior rows ``0 < b_1 < ... < b_{P-1} < T``."""
        T = _index(T, "T", minimum=1)
        inner = [_index(b, "windows (boundaries)", minimum=1) for b in boundaries]
        bounds = (0, *inner, T)
        if any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(
                f"window boundaries must increase strictly inside (0, T={T}), got {list(inner)}"
            )
        return cls._checked(T, overlap, bounds)

    @classmethod
    def _checked(cls, T: int, overlap: int, bounds: tuple[int, ...]) -> Partition:
        overlap = _index(overlap, "overlap", minimum=0)
        shortest = min(b - a for a, b in itertools.pairwise(bounds))
        if len(bounds) > 2 and overlap >= shortest:
            raise ValueError(
                f"overlap={overlap} must be smaller than the shortest owned window ({shortest} "
                f"steps), so that a window overlaps only its neighbours; use fewer windows or "
                f"overlap ≤ {shortest - 1}"
            )
        return cls(T=T, overlap=overlap if len(bounds) > 2 else 0, bounds=bounds)

    @property
    def P(self) -> int:
        """Number of windows."""
        return len(self.bounds) - 1

    def owned(self, p: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` owned by window ``p``."""
        return self.bounds[p], self.bounds[p + 1]

    def covered(self, p: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` window ``p`` solves (owned part plus left overlap)."""
        return max(self.bounds[p] - self.overlap, 0), self.bounds[p + 1]

    def handoff(self, p: int) -> int:
        """Row of window ``p``'s initial state, owned by ``p - 1`` (``-1``: ``h0``)."""
        return self.covered(p)[0] - 1

    def blocks(self, ranks: int) -> list[range]:
        """Contiguous blocks of windows for ``ranks`` processes (earlier blocks one longer)."""
        if ranks > self.P:
            raise ValueError(
                f"{ranks} processes need at least as many windows, got windows={self.P}"
            )
        q, r = divmod(self.P, ranks)
        out, start = [], 0
        for k in range(ranks):
            stop = start + q + (1 if k < r else 0)
            out.append(range(start, stop))
            start = stop
        return out


def _index(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}")
    return value

"""Input checks shared by every public entry point: each failure names the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import array_namespace, is_cupy_array

__all__ = ["as_float_array", "check_finite", "check_positive_int", "result_float_dtype"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(x: Any, name: str, *, min_ndim: int = 0) -> Any:
    """``x`` as a NumPy or CuPy array of float32/float64, else a ``TypeError``/``ValueError``.

    Python lists and scalars are converted to NumPy; integer, boolean, complex and object
    dtypes are rejected rather than silently cast (a silent cast hides a caller's mistake).
    """
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if not (isinstance(x, np.ndarray) or is_cupy_array(x)):
        try:
            x = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be an array of floats, got {type(x).__name__}") from exc
        if x.dtype.kind in "iub":
            # literals like [0, 1] are a convenience for Python containers only
            x = x.astype(np.float64)
    dtype = np.dtype(x.dtype)
    if dtype not in _FLOATS:
        kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}.get(
            dtype.kind, str(dtype)
        )
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {kind} dtype {dtype}; "
            f"convert it with .astype(float)"
        )
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {x.shape}")
    return x


#: entries checked at a time by :func:`check_finite` (its temporaries: a few bytes each)
_FINITE_CHUNK = 2**22


def check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (the first bad index, in C order, is
    reported). A C-contiguous array (a ``numpy.memmap`` of a ``.npy`` file, say) is checked
    in chunks of its flat view, so that the check holds no temporary of the size of ``x``:
    memory-mapped data is read, never copied."""
    xp = array_namespace(x)
    if x.ndim == 0 or x.size <= _FINITE_CHUNK or not x.flags.c_contiguous:
        blocks = [(0, x)]
    else:
        flat = x.reshape(-1)
        blocks = ((a, flat[a : a + _FINITE_CHUNK]) for a in range(0, x.size, _FINITE_CHUNK))
    for offset, block in blocks:
        ok = xp.isfinite(block)
        if bool(ok.all()):
            continue
        if block.ndim == 0:
            bad: tuple[int, ...] = ()
        elif block is x:
            bad = tuple(int(i[0]) for i in xp.nonzero(~ok))
        else:
            first = offset + int(xp.nonzero(~ok)[0][0])
            bad = tuple(int(i) for i in np.unravel_index(first, x.shape))
        raise ValueError(f"{name} contains non-finite values (NaN or Inf), first at index {bad}")


def check_positive_int(n: Any, name: str, *, allow_none: bool = False) -> int | None:
    """``n`` as a Python int ≥ 1 (``TypeError`` for non-integers, ``ValueError`` for n < 1)."""
    if n is None and allow_none:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be a positive integer (≥ 1), got {n}")
    return int(n)


def result_float_dtype(*arrays: Any) -> np.dtype:
    """The common floating dtype: float32 if every array is float32, else float64."""
    return np.result_type(*[a.dtype for a in arrays if a is not None])

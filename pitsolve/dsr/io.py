r"""Reading and writing observed time series :math:`X \in \mathbb{R}^{T \times N}`.

Formats, chosen by the file's extension (case-insensitive):

- ``.npy`` — one array;
- ``.npz`` — one array, or the one named by ``key=``;
- ``.csv`` / ``.txt`` — one time step per line, cells separated by commas (if the first data
  line has one) or else by whitespace; blank lines and lines starting with ``#`` are skipped,
  and a first line whose cells are all non-numeric is taken as a header of names and skipped.

A loaded series is float64 of shape ``(T, N)`` with T ≥ 2 and N ≥ 1, finite everywhere; a 1-D
array is one observed dimension, ``(T, 1)``. Every failure names the file and, where there is
one, the offending line or index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_series", "save_series"]

_TEXT = (".csv", ".txt")
_LOADABLE = (".npy", ".npz", *_TEXT)
_SAVABLE = (".npy", *_TEXT)


def load_series(path: str | os.PathLike[str], *, key: str | None = None) -> np.ndarray:
    r""":math:`X \in \mathbb{R}^{T \times N}` (float64, T ≥ 2, finite) read from ``path``.

    Parameters
    ----------
    path : a ``.npy``, ``.npz``, ``.csv`` or ``.txt`` file.
    key : the array to read from a ``.npz`` file holding several; only for ``.npz``.

    Returns
    -------
    ``(T, N)`` float64 array; a 1-D series is returned as ``(T, 1)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unknown extension, a ``.npz`` with several arrays and no ``key`` (the keys are
        listed) or without ``key``, ragged rows or non-numeric cells in a text file (with the
        line number), NaN or Inf (with the first bad position), rank 0 or ≥ 3, fewer than two
        time steps or no columns.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"series file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not a series file")
    suffix = p.suffix.lower()
    if suffix not in _LOADABLE:
        raise ValueError(f"{p}: unknown extension {p.suffix!r}; supported: {', '.join(_LOADABLE)}")
    if key is not None and suffix != ".npz":
        raise ValueError(f"{p}: key= applies only to .npz files, got key={key!r}")
    if suffix == ".npy":
        x, lines = _numeric(_load_npy(p), p), None
    elif suffix == ".npz":
        x, lines = _numeric(_load_npz(p, key), p), None
    else:
        x, lines = _load_text(p)
    return _check_series(x, p, lines)


def save_series(path: str | os.PathLike[str], x: Any, *, header: list[str] | None = None) -> None:
    r"""Write :math:`X \in \mathbb{R}^{T \times N}` so that :func:`load_series` reads it back.

    Parameters
    ----------
    path : destination; ``.npy`` (binary, exact), ``.csv`` (comma-separated) or ``.txt``
        (space-separated); text is written with 17 significant digits, which round-trips
        float64 exactly.
    x : ``(T, N)`` or ``(T,)`` array of real numbers, finite, T ≥ 2.
    header : optional column names for text files (one per column, written as the first line).

    Raises
    ------
    ValueError
        For an unknown extension or a series :func:`load_series` would reject.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _SAVABLE:
        raise ValueError(f"{p}: cannot save with extension {p.suffix!r}; use {', '.join(_SAVABLE)}")
    arr = _check_series(_numeric(np.asarray(x), p, what="x"), p, None, what="x")
    if suffix == ".npy":
        if header is not None:
            raise ValueError(f"{p}: header= applies only to text files")
        with open(p, "wb") as fh:  # a file object: np.save would append ".npy" to "x.NPY"
            np.save(fh, arr)
        return
    sep = "," if suffix == ".csv" else " "
    head = ""
    if header is not None:
        names = [str(h) for h in header]
        if len(names) != arr.shape[1]:
            raise ValueError(f"header has {len(names)} names for {arr.shape[1]} columns")
        for name in names:
            if not name or _is_number(name) or any(c in name for c in ", \t\n#"):
                raise ValueError(
                    f"header name {name!r} must be non-empty, non-numeric and free of "
                    "separators, whitespace and '#'"
                )
        head = sep.join(names)
    np.savetxt(p, arr, fmt="%.17g", delimiter=sep, header=head, comments="")


# --------------------------------------------------------------------------------------------


def _load_npy(p: Path) -> np.ndarray:
    try:
        x = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays, or not an .npy file
        raise ValueError(f"{p}: cannot read as a numeric .npy array ({exc})") from exc
    if not isinstance(x, np.ndarray):  # np.load goes by content: an .npz renamed .npy
        x.close()
        raise ValueError(f"{p}: not an .npy array (the content is an .npz archive)")
    return x


def _load_npz(p: Path, key: str | None) -> np.ndarray:
    try:
        archive = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{p}: cannot read as an .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: not an .npz archive")
    with archive:
        keys = list(archive.files)
        if not keys:
            raise ValueError(f"{p}: the .npz archive holds no arrays")
        if key is None:
            if len(keys) > 1:
                raise ValueError(
                    f"{p}: the .npz archive holds {len(keys)} arrays ({', '.join(keys)}); "
                    "choose one with key="
                )
            key = keys[0]
        if key not in keys:
            raise ValueError(f"{p}: no array {key!r} in the .npz archive; keys: {', '.join(keys)}")
        try:
            return archive[key]
        except ValueError as exc:
            raise ValueError(f"{p}: cannot read array {key!r} ({exc})") from exc


def _numeric(x: np.ndarray, p: Path, *, what: str | None = None) -> np.ndarray:
    """Real numeric dtypes (bool, int, float) become float64; others are rejected."""
    where = what if what is not None else str(p)
    if x.dtype.kind in "biuf":
        return np.asarray(x, dtype=np.float64)
    kind = {"c": "complex", "U": "string", "S": "bytes", "O": "object"}.get(x.dtype.kind, "a")
    raise ValueError(f"{where}: values must be real numbers, got {kind} dtype ({x.dtype})")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _cells(line: str, comma: bool) -> list[str]:
    return [c.strip() for c in line.split(",")] if comma else line.split()


def _load_text(p: Path) -> tuple[np.ndarray, list[int]]:
    """Parse a text table; return the values and the 1-based line number of each row."""
    try:
        with open(p, encoding="utf-8") as fh:
            raw = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a UTF-8 text file ({exc})") from exc
    numbered = [
        (i + 1, line)
        for i, line in enumerate(raw)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise ValueError(f"{p}: no data lines")
    comma = "," in numbered[0][1]
    first = _cells(numbered[0][1], comma)
    if not any(_is_number(c) for c in first):
        numbered = numbered[1:]  # header of names
        if not numbered:
            raise ValueError(f"{p}: a header line but no data lines")
        comma = "," in numbered[0][1]
    lines = [n for n, _ in numbered]
    try:
        # fast path; on any failure the scan below finds and names the offending line
        x = np.loadtxt(
            [line for _, line in numbered],
            delimiter="," if comma else None,
            comments=None,
            ndmin=2,
            dtype=np.float64,
        )
        if x.shape[0] == len(numbered):
            return x, lines
    except ValueError:
        pass
    width = None
    rows: list[list[float]] = []
    for lineno, line in numbered:
        cells = _cells(line, comma)
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise ValueError(
                f"{p}, line {lineno}: {len(cells)} cell(s), but the rows above have {width} "
                "(ragged rows)"
            )
        row = []
        for j, cell in enumerate(cells):
            try:
                row.append(float(cell))
            except ValueError:
                raise ValueError(
                    f"{p}, line {lineno}, column {j + 1}: non-numeric value {cell!r}"
                ) from None
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), width or 0), lines


def _check_series(
    x: np.ndarray, p: Path, lines: list[int] | None, *, what: str | None = None
) -> np.ndarray:
    where = what if what is not None else str(p)
    if x.ndim == 0 or x.ndim >= 3:
        raise ValueError(
            f"{where}: a series must be 1-D (T,) or 2-D (T, N), got rank {x.ndim}, shape {x.shape}"
        )
    if x.ndim == 1:
        x = x[:, None]
    T, N = x.shape
    if T < 2:
        raise ValueError(f"{where}: a series needs at least 2 time steps, got {T}")
    if N < 1:
        raise ValueError(f"{where}: the series has no columns (shape {x.shape})")
    finite = np.isfinite(x)
    if not finite.all():
        t, n = (int(i) for i in np.argwhere(~finite)[0])
        at = f"line {lines[t]}, column {n + 1}" if lines is not None else f"index ({t}, {n})"
        raise ValueError(f"{where}: non-finite value {x[t, n]} (NaN or Inf) at {at}")
    return np.ascontiguousarray(x, dtype=np.float64)

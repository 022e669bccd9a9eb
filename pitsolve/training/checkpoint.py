r"""Atomic checkpoints: a ``.npz`` of named arrays plus JSON metadata, never half-written.

A checkpoint at ``path`` is replaced by writing the new one to a temporary file in the same
directory, flushing it to disk (``fsync``), renaming it onto ``path`` (``os.replace``, atomic
on POSIX and Windows within one file system) and flushing the directory entry. At every instant
``path`` therefore names either the complete old checkpoint or the complete new one, even if
the process is killed (SIGKILL, power loss after the rename is durable) while writing:

.. math::

    \text{write}(\text{tmp}) \to \text{fsync}(\text{tmp}) \to
    \text{rename}(\text{tmp}, \text{path}) \to \text{fsync}(\text{dir}).

The file is an ordinary uncompressed NumPy ``.npz`` (readable by :func:`numpy.load`); the
metadata is JSON text stored as a 0-d string array under the reserved key ``"__meta__"``.
:func:`rng_state` / :func:`restore_rng` carry a :class:`numpy.random.Generator` through the
metadata so that a resumed run draws the same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import to_numpy

__all__ = ["META_KEY", "load_checkpoint", "restore_rng", "rng_state", "save_checkpoint"]

#: The reserved array name under which the JSON metadata is stored.
META_KEY = "__meta__"


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def _prepare(arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping name -> array, got {type(arrays).__name__}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping (JSON object), got {type(meta).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"array names must be non-empty strings, got {key!r}")
        if key == META_KEY:
            raise ValueError(f"the array name {META_KEY!r} is reserved for the metadata")
        a = np.asarray(to_numpy(value))
        if a.dtype.hasobject:
            raise TypeError(f"arrays[{key!r}] has dtype object, which cannot be saved safely")
        out[key] = a
    try:
        text = json.dumps(dict(meta))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta must be JSON-serialisable: {exc}") from exc
    out[META_KEY] = np.asarray(text)
    return out


def _write_npz(file: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` (what :func:`numpy.savez` writes) into an open binary file."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, a in arrays.items():
            with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def save_checkpoint(
    path: str | os.PathLike[str], arrays: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    r"""Write a checkpoint atomically: afterwards ``path`` holds the new one, or still the old.

    The steps are write(tmp) → fsync(tmp) → os.replace(tmp, path) → fsync(directory), with
    ``tmp`` created by :func:`tempfile.mkstemp` next to ``path``. On any exception (including
    ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched. A process
    killed by SIGKILL while writing may leave a ``.<name>.*.tmp`` file behind, never a
    corrupt ``path``.

    Parameters
    ----------
    path
        The checkpoint file, used as given (no suffix is added). Parent directories are
        created.
    arrays
        Named arrays (NumPy, CuPy or array-likes; not object arrays). The name ``"__meta__"``
        is reserved.
    meta
        A JSON-serialisable mapping (numbers, strings, lists, dicts; NaN and Inf allowed).

    Raises
    ------
    TypeError
        For non-string names, object arrays or metadata that JSON cannot encode.
    ValueError
        For the reserved name.
    """
    payload = _prepare(arrays, meta)  # fail on bad input before touching the disk
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, payload)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # chmod may be unsupported
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    r"""The arrays and metadata of a checkpoint written by :func:`save_checkpoint`.

    Every member is read in full and its CRC-32 checked, so a damaged file is detected here
    rather than later in training.

    Parameters
    ----------
    path
        The checkpoint file.

    Returns
    -------
    arrays, meta
        NumPy arrays by name (bitwise as saved, the metadata key removed) and the metadata.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated, corrupt or not a pitsolve checkpoint (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path, mode="r") as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"unexpected member {info.filename!r}")
                with zf.open(info) as member:
                    a = np.lib.format.read_array(member, allow_pickle=False)
                    if member.read():  # reading to the end checks the CRC-32
                        raise ValueError(f"member {info.filename!r} has trailing bytes")
                arrays[info.filename[: -len(".npy")]] = a
        if META_KEY not in arrays:
            raise ValueError(f"no {META_KEY!r} entry: not a pitsolve checkpoint")
        meta = json.loads(str(arrays.pop(META_KEY)[()]))
        if not isinstance(meta, dict):
            raise ValueError("the metadata is not a JSON object")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "restore it from a backup or start without it"
        ) from exc
    return arrays, meta


# -- random number generators -----------------------------------------------------------------
_ND = "__ndarray__"


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return {_ND: value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if _ND in value:
            return np.asarray(value[_ND], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def rng_state(gen: np.random.Generator) -> dict[str, Any]:
    r"""The exact state of a generator as a JSON-serialisable dict (for checkpoint metadata).

    The state is that of the bit generator (``gen.bit_generator.state``: PCG64, MT19937,
    Philox, SFC64, ...), integers kept exact (JSON integers are unbounded) and arrays encoded
    with their dtype. :func:`restore_rng` inverts it.
    """
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"gen must be a numpy.random.Generator, got {type(gen).__name__}")
    return _to_json(gen.bit_generator.state)


def restore_rng(state: Mapping[str, Any]) -> np.random.Generator:
    """A new generator in the state recorded by :func:`rng_state`; it continues the stream.

    Raises
    ------
    ValueError
        If ``state`` does not describe a NumPy bit generator.
    """
    if not isinstance(state, Mapping) or "bit_generator" not in state:
        raise ValueError("state must be a dict made by rng_state (with a 'bit_generator' entry)")
    name = state["bit_generator"]
    cls = getattr(np.random, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {name!r} in the RNG state")
    bit_generator = cls()
    try:
        bit_generator.state = _from_json(dict(state))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid {name} state: {exc}") from exc
    return np.random.Generator(bit_generator)


_MODEL_BUILDERS = ("ShPLRNN", "ClippedShPLRNN", "ALRNN")
_OBSERVATIONS = ("Identity", "Affine")


def save_model(path: str | os.PathLike[str], model: Any, meta: Mapping[str, Any] | None = None
               ) -> None:
    """Save a shPLRNN-family model's parameters and what is needed to rebuild it, atomically.

    An :class:`~pitsolve.training.observation.ObservedModel` of one is saved with its
    observation model (its type and, for ``Affine``, ``B`` and ``b``). ``meta`` (JSON-able)
    is stored beside them, e.g. the data's ``dt`` and scaling.
    """
    from .observation import ObservedModel

    latent, observation = (model.latent, model.observation) if isinstance(
        model, ObservedModel) else (model, None)
    name = type(latent).__name__
    if name not in _MODEL_BUILDERS:
        raise TypeError(f"save_model supports {_MODEL_BUILDERS}, got {name}")
    info = {"model": name, "relu_units": getattr(latent, "relu_units", None), **(meta or {})}
    if observation is not None:
        info["observation"] = type(observation).__name__
        info["differentiate_forcing"] = getattr(observation, "differentiate_forcing", True)
    save_checkpoint(path, {f"params/{k}": np.asarray(v) for k, v in model.params.items()}, info)


def load_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """``(model, meta)`` from a file written by :func:`save_model` (with its observation
    model, if it was saved with one)."""
    from .. import models
    from . import observation as obs

    arrays, meta = load_checkpoint(path)
    name = meta.get("model")
    if name not in _MODEL_BUILDERS:
        raise ValueError(f"{os.fspath(path)!r} is not a pitsolve model file (model={name!r})")
    params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("params/")}
    latent = {k: v for k, v in params.items() if not k.startswith(obs.PREFIX)}
    cls = getattr(models, name)
    model = cls.from_params(latent, meta["relu_units"]) if name == "ALRNN" else cls.from_params(
        latent)
    kind = meta.get("observation")
    if kind is None:
        return model, meta
    if kind not in _OBSERVATIONS:
        raise ValueError(f"{os.fspath(path)!r} has an unknown observation model {kind!r}")
    if kind == "Identity":
        return obs.ObservedModel(model, obs.Identity()), meta
    affine = obs.Affine(params[obs.PREFIX + "B"], params[obs.PREFIX + "b"],
                        differentiate_forcing=bool(meta.get("differentiate_forcing", True)))
    return obs.ObservedModel(model, affine), meta

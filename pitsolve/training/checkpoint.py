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

Besides the file format this module holds what is stored in it: models
(:func:`save_model` / :func:`load_model`, from the model's own
:meth:`~pitsolve.models.Model.config`) and the state of training (:func:`training_meta`,
:func:`best_arrays`, :func:`restored_history`, :func:`check_resumable`), shared by the
global and the local objective.
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

__all__ = [
    "META_KEY",
    "best_arrays",
    "check_resumable",
    "load_checkpoint",
    "load_model",
    "restore_rng",
    "restored_history",
    "rng_state",
    "save_checkpoint",
    "save_model",
    "training_meta",
]

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


# -- models ---------------------------------------------------------------------------------
def save_model(path: str | os.PathLike[str], model: Any, meta: Mapping[str, Any] | None = None
               ) -> None:
    """Save a model's parameters and what rebuilds it (:meth:`~pitsolve.models.Model.config`),
    atomically.

    Every built-in model with a configuration (the shPLRNNs, ALRNN, Elman, GRU, LinearSSM),
    and an :class:`~pitsolve.models.ObservedModel` of one with its observation model, can be
    saved. ``meta`` (JSON-able) is stored beside them, e.g. the data's ``dt`` and scaling; its
    keys ``model`` and ``config`` are reserved.

    Raises
    ------
    TypeError
        For a model that does not describe its configuration.
    """
    try:
        config = model.config()
    except NotImplementedError as exc:
        raise TypeError(f"save_model cannot save {type(model).__name__}: {exc}") from exc
    info = {**(meta or {}), "model": type(model).__name__, "config": config}
    save_checkpoint(path, {f"params/{k}": to_numpy(v) for k, v in model.params.items()}, info)


def load_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """``(model, meta)`` from a file written by :func:`save_model` (with its observation
    model, if it was saved with one); files of earlier releases, which stored a shPLRNN
    family model by name, load too.

    Raises
    ------
    ValueError
        If the file does not hold a model pitsolve can rebuild.
    """
    from .. import models

    arrays, meta = load_checkpoint(path)
    params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("params/")}
    name = meta.get("model")
    config = meta.get("config")
    try:
        if config is None:
            name, config = _legacy_config(meta, params)
        model = models.from_config(name, config, params)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"{os.fspath(path)!r} does not hold a model pitsolve can rebuild (model={name!r}): "
            f"{exc}"
        ) from exc
    return model, meta


def _legacy_config(meta: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[str, dict]:
    """``(name, config)`` of a model file written before models described themselves: a
    shPLRNN, clipped shPLRNN or ALRNN by class name (sizes from the parameters), optionally
    with an ``observation`` (Identity or Affine)."""
    name = meta.get("model")
    M = int(np.shape(params["a"])[0])
    if name == "ALRNN":
        latent = {"latent": M, "relu_units": int(meta["relu_units"])}
    elif name in ("ShPLRNN", "ClippedShPLRNN"):
        latent = {"latent": M, "hidden": int(np.shape(params["W2"])[0])}
    else:
        raise ValueError(f"unknown model {name!r}")
    kind = meta.get("observation")
    if kind is None:
        return name, latent
    observation: dict[str, Any] = {"model": kind}
    if kind == "Affine":
        observation["differentiate_forcing"] = bool(meta.get("differentiate_forcing", True))
    return "ObservedModel", {"latent": {"model": name, **latent}, "observation": observation}


# -- the training state ------------------------------------------------------------------------
# A training checkpoint holds the arrays ``params/<name>`` (the model), ``best/<name>`` and
# ``best/epoch`` (the best model so far, with ``validate``), plus the objective's own state
# (``opt/...`` for the global objective; ``window/<p>/...`` and ``steps`` for the local one,
# see :meth:`pitsolve.training.local.LocalTraining.state_arrays`). Metadata: ``objective``
# ("global" when absent: checkpoints written before it was recorded), ``epoch``, ``alpha``,
# the histories, ``validation``, ``best_score``, and the objective's own entries (``rng`` for
# the global objective; ``schwarz``, the partition and coupling a resume must match, for the
# local one).
def training_meta(objective: str, epoch: int, alpha: float, losses: list[float],
                  alphas: list[float], stats: list[dict[str, Any]],
                  validation: list[tuple[int, float]], best_score: float,
                  **extra: Any) -> dict[str, Any]:
    """The metadata every training checkpoint holds (``extra``: the objective's own)."""
    return {"objective": objective, "epoch": epoch, "alpha": float(alpha),
            "loss_history": losses, "alpha_history": alphas, "stats": stats,
            "validation": [list(v) for v in validation], "best_score": best_score, **extra}


def best_arrays(best_params: Any, best_epoch: int) -> dict[str, Any]:
    """``best/<name>`` and ``best/epoch`` (nothing before a validation has picked a model)."""
    if best_params is None or best_epoch <= 0:
        return {}
    arrays: dict[str, Any] = {f"best/{k}": to_numpy(v) for k, v in best_params.items()}
    arrays["best/epoch"] = np.asarray(best_epoch)
    return arrays


def restored_history(arrays: Mapping[str, Any], meta: Mapping[str, Any], names: Any
                     ) -> tuple[list[float], list[float], list[dict[str, Any]],
                                list[tuple[int, float]], tuple[float, int, dict] | None]:
    """(losses, alphas, stats, validation, best) of a training checkpoint; best is
    ``(score, epoch, {name: array})`` for the parameter ``names``, or None if unset."""
    validation = [tuple(v) for v in meta.get("validation", [])]
    best = None
    if "best/epoch" in arrays:
        best = (float(meta["best_score"]), int(arrays["best/epoch"]),
                {k: arrays[f"best/{k}"] for k in names})
    return meta["loss_history"], meta["alpha_history"], meta["stats"], validation, best


def _describe(objective: str, config: Mapping[str, Any] | None) -> str:
    if objective != "local":
        return "global-objective training (objective='global')"
    inner = ", ".join(f"{k}={(config or {}).get(k)!r}"
                      for k in ("windows", "overlap", "sync", "mu"))
    return f"local-objective training ({inner})"


def check_resumable(path: str, meta: Mapping[str, Any], objective: str,
                    config: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError unless ``meta`` is a checkpoint of the same kind of training.

    ``objective`` is "global" or "local"; for "local", ``config`` is the run's partition and
    coupling (T, windows, overlap, sync, mu, bounds), which must equal the checkpoint's
    ``schwarz`` entry.
    """
    found = meta.get("objective", "global")
    if found != objective:
        raise ValueError(
            f"checkpoint {path!r} was written by {_describe(found, meta.get('schwarz'))}, but "
            f"this run uses {_describe(objective, config)}; resume with the objective that "
            "wrote it, or pass a new checkpoint path"
        )
    if objective != "local" or config is None:
        return
    saved = meta.get("schwarz") or {}
    differ = [k for k in ("T", "windows", "overlap", "sync", "mu") if saved.get(k) != config[k]]
    if not differ and list(saved.get("bounds", [])) != list(config["bounds"]):
        differ = ["bounds"]
    if differ:
        what = ", ".join(f"{k}={saved.get(k)!r} in the checkpoint but {config[k]!r} now"
                         for k in differ)
        raise ValueError(
            f"checkpoint {path!r} was written by local-objective training with a different "
            f"Schwarz configuration: {what} ('T' counts the steps of the data); resume with "
            "the solver options and data of the run that wrote it, or pass a new checkpoint path"
        )

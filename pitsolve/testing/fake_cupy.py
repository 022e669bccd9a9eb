"""A strict, NumPy-backed stand-in for CuPy, to run the CuPy code paths on a machine without a
GPU.

Its arrays (``fake_cupy.ndarray``, whose type lives in a module called ``cupy``, so pitsolve
takes them for CuPy arrays) hold a NumPy array and behave as CuPy's do where it matters for
correctness, more strictly where CuPy would be lenient:

- **no implicit conversion to NumPy**: ``numpy.asarray(a)``, ``a.__array__()`` and NumPy
  functions given a mix of device and host arrays raise ``TypeError`` (CuPy refuses the first
  and fails or copies silently on the rest); ``a.get()`` is the explicit transfer;
- **no mixing with NumPy arrays**: an operator, a ufunc or a ``cupy.*`` function given a device
  array and a NumPy array (other than a 0-d one or a scalar) raises ``TypeError``, and so does
  assigning a NumPy array into a device array;
- functions and reductions return device arrays, 0-d ones for scalars (never NumPy scalars);
  ``float``, ``int`` and ``bool`` of a 0-d (or one-element) array work (a device
  synchronisation in CuPy).

:func:`installed` puts it in place of CuPy for the duration of a ``with`` block (``cupy`` and
``cupyx`` in ``sys.modules``, pitsolve's CuPy detection and its CuPy backend), so that
``backend="cupy"`` and CuPy arrays in, CuPy arrays out run end to end. Nothing here is
imported by pitsolve itself. It runs NumPy underneath, so it checks where arrays live and that
every code path works on the namespace, not GPU performance.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["asarray", "installed", "module", "ndarray"]


#: Device operations by name since the last ``clear()``: ufuncs, array functions, methods
#: and assignments that compute or copy (views are not counted) — on CuPy, about one kernel
#: launch each. A measure of how many launches a computation makes, not of their cost.
OPERATIONS: collections.Counter[str] = collections.Counter()
_VIEWS = frozenset({"reshape", "view", "transpose", "swapaxes", "broadcast_to", "squeeze",
                    "expand_dims", "moveaxis", "get", "item", "tolist", "empty", "empty_like",
                    "ascontiguousarray"})  # (the last: counted where it copies)


class _Refused(TypeError):
    """A host array where a device array was required (or the other way round)."""


def _refuse(what: str) -> _Refused:
    return _Refused(f"fake cupy: {what}; move arrays explicitly (cupy.asarray / .get())")


def _is_host_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.ndim > 0


def _unwrap(x: Any, allow_host: bool = False) -> Any:
    """The NumPy array inside a device array; containers recursively; host arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, allow_host) for v in x)
    if _is_host_array(x) and not allow_host:
        raise _refuse("a NumPy array mixed with device arrays")
    return x


def _wrap(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):  # CuPy returns 0-d device arrays, never NumPy scalars
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class ndarray(NDArrayOperatorsMixin):
    """A device array: a NumPy array that refuses to meet host arrays implicitly."""

    __slots__ = ("_a",)

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- what CuPy arrays refuse -----------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse("implicit conversion of a device array to NumPy")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        OPERATIONS[ufunc.__name__] += 1
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        result = getattr(ufunc, method)(*(_unwrap(v) for v in inputs), **kwargs)
        return _wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        OPERATIONS[func.__name__] += 1
        return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    # -- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    base = property(lambda self: None if self._a.base is None else ndarray(self._a.base))

    def get(self) -> np.ndarray:
        """A NumPy copy (the explicit device-to-host transfer)."""
        return self._a.copy()

    def _simulator_view(self) -> np.ndarray:
        """The memory a CUDA kernel sees under Numba's simulator (which runs kernels on
        NumPy arrays): the wrapped array itself, so that kernels write through."""
        return self._a

    # -- indexing --------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key, allow_host=True)])

    def __setitem__(self, key: Any, value: Any) -> None:
        OPERATIONS["setitem"] += 1
        self._a[_unwrap(key, allow_host=True)] = _unwrap(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Any]:
        return (_wrap(v) for v in self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __repr__(self) -> str:
        return f"fake_cupy.{self._a!r}"

    def __getattr__(self, name: str) -> Any:
        # methods (reshape, astype, sum, max, ...): run on the NumPy array, results wrapped;
        # no NumPy protocol (``__array_interface__``, buffers): a device array has none
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        @functools.wraps(attr)
        def method(*args: Any, **kwargs: Any) -> Any:
            if name not in _VIEWS:
                OPERATIONS[name] += 1
            return _wrap(attr(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

        return method


ndarray.__module__ = "cupy"  # pitsolve tells CuPy arrays by the module of their type


def asarray(x: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """A device array from a host array, a scalar, a list or a device array (a copy from the
    host; no copy if it is on the device with that dtype)."""
    if isinstance(x, ndarray):
        return x if dtype is None or x.dtype == dtype else ndarray(x._a.astype(dtype))
    return ndarray(np.array(x, dtype=dtype, order=order or "K"))


def _function(fn: Any) -> Any:
    """A ``cupy.*`` function: device arrays in, device arrays out, no host arrays."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _unwrap(args), {k: _unwrap(v) for k, v in kwargs.items()}
        out = fn(*args, **kwargs)
        if fn.__name__ not in _VIEWS or (
            fn.__name__ == "ascontiguousarray" and not np.shares_memory(out, args[0])
        ):
            OPERATIONS[fn.__name__] += 1
        return _wrap(out)

    return call


def _namespace(name: str, source: Any) -> types.ModuleType:
    mod = types.ModuleType(name)

    def __getattr__(attr: str) -> Any:
        value = getattr(source, attr)
        if isinstance(value, types.ModuleType) or isinstance(value, type) or not callable(value):
            return value  # dtypes, constants
        return _function(value)

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod


def _build() -> types.ModuleType:
    cupy = _namespace("cupy", np)
    cupy.ndarray = ndarray
    cupy.asarray = asarray
    cupy.array = asarray
    cupy.asnumpy = lambda x: x.get() if isinstance(x, ndarray) else np.asarray(x)
    cupy.get_array_module = lambda *arrays: cupy
    cupy.linalg = _namespace("cupy.linalg", np.linalg)
    cupy.random = _namespace("cupy.random", np.random)
    cupy.__version__ = "14.0.0+fake"
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    cupy.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda i=0: contextlib.nullcontext())
    return cupy


#: The stand-in ``cupy`` module.
module = _build()


@contextlib.contextmanager
def installed() -> Iterator[types.ModuleType]:
    """Make the stand-in the ``cupy`` module pitsolve sees (detection, the CuPy backend),
    restoring everything afterwards."""
    from .. import _arrays, backends

    saved = {k: sys.modules.get(k) for k in ("cupy",)}
    sys.modules["cupy"] = module
    has_cupy = _arrays.has_cupy
    _arrays.has_cupy = backends.has_cupy = lambda: True  # type: ignore[assignment]
    backends._instance.cache_clear()
    try:
        yield module
    finally:
        backends._instance.cache_clear()
        _arrays.has_cupy = backends.has_cupy = has_cupy  # type: ignore[assignment]
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

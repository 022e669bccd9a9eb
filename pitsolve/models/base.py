r"""The model protocol: a parameter container plus hand-derived functions batched over time.

A model defines one step :math:`h_t = f(h_{t-1}, x_t; \theta)` and its derivatives, each taking
arrays with any leading axes (time, batch) and the state on the last axis:

========================  ===================================================  ================
method                    computes                                             shape
========================  ===================================================  ================
``f(h, x)``               :math:`f(h, x)`                                      ``(..., D)``
``jacobian(h, x)``        :math:`J = \partial f/\partial h`                    ``(..., D, D)``
                                                                               or ``(..., D)``
``diagonal_jacobian``     :math:`\operatorname{diag} J`                        ``(..., D)``
``jvp(h, x, v)``          :math:`J v`                                          ``(..., D)``
``vjp_h(h, x, u)``        :math:`J^\top u`                                     ``(..., D)``
``vjp_params(h, x, u)``   :math:`\sum_{...} (\partial f/\partial\theta)^\top u`  :class:`Params`
``vjp_inputs(h, x, u)``   :math:`(\partial f/\partial x)^\top u`               ``(..., N_x)``
``linearize(h, x)``       :math:`J` at fixed (h, x): ``.jvp(v)``, ``.vjp(u)``  ``Linearization``
                          without evaluating f again
========================  ===================================================  ================

``x`` is ``None`` for models without inputs. ``jacobian_structure`` declares whether
``jacobian`` returns dense matrices or diagonals. Everything is written against the array
namespace of ``h`` (NumPy or CuPy), so one implementation serves CPU and GPU.

A solve binds the model to its backend (:meth:`Model.on`); the backend, never the type of an
array, decides whether a built-in model evaluates with its compiled kernels (the Numba
backend) or with the array-namespace code. What training needs of a model is part of the
protocol too: :meth:`Model.config` (what rebuilds it from its parameters, for checkpoints)
and :meth:`Model.regularization_target` (the parameters a regulariser pulls towards).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from .._arrays import array_namespace
from .._validation import as_float_array
from ..backends import Backend, for_arrays, get_backend
from ._loops import bptt_shapes, run_loop, run_loop_bptt, sum_to

__all__ = [
    "Linearization",
    "Model",
    "Parametrized",
    "Params",
    "bptt_shapes",
    "linearize",
    "step_loop",
    "to_namespace",
]


class Params(Mapping):
    """An ordered mapping of parameter names to float arrays that flattens to one vector.

    ``flatten()`` concatenates the arrays (C order, in insertion order) into one vector and
    ``unflatten(v)`` rebuilds the structure, so SciPy optimisers can work on parameters.
    Instances are immutable: ``replace`` returns a new one.
    """

    def __init__(self, arrays: Mapping[str, Any] | None = None, /, **named: Any):
        merged = dict(arrays or {}, **named)
        self._arrays = {k: as_float_array(v, f"params[{k!r}]") for k, v in merged.items()}

    def __getitem__(self, name: str) -> Any:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._arrays.items())
        return f"Params({inner})"

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return int(sum(v.size for v in self._arrays.values()))

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*[v.dtype for v in self._arrays.values()])

    def replace(self, **arrays: Any) -> Params:
        """A copy with some arrays replaced (same names and shapes required).

        Raises
        ------
        TypeError
            For a name that is not a parameter (the message lists the valid ones).
        ValueError
            For an array of another shape.
        """
        unknown = sorted(set(arrays) - set(self._arrays))
        if unknown:
            raise TypeError(
                f"unknown parameter(s) {unknown}; the parameters are {list(self._arrays)}"
            )
        for k, v in arrays.items():
            shape = getattr(v, "shape", np.shape(v))
            if tuple(shape) != tuple(self._arrays[k].shape):
                raise ValueError(
                    f"parameter {k!r} must keep shape {self._arrays[k].shape}, got {shape}"
                )
        return Params({**self._arrays, **arrays})

    def copy(self) -> Params:
        """A deep copy."""
        return Params({k: v.copy() for k, v in self._arrays.items()})

    def flatten(self) -> Any:
        """All parameters as one vector."""
        arrays = list(self._arrays.values())
        xp = array_namespace(*arrays)
        return xp.concatenate([xp.ravel(v) for v in arrays]) if arrays else xp.zeros(0)

    def unflatten(self, vector: Any) -> Params:
        """Parameters with this structure from a vector made by :meth:`flatten`."""
        vector = as_float_array(vector, "vector", min_ndim=1)
        if vector.ndim != 1 or vector.shape[0] != self.size:
            raise ValueError(f"vector must have shape ({self.size},), got {vector.shape}")
        out, i = {}, 0
        for k, v in self._arrays.items():
            out[k] = vector[i : i + v.size].reshape(v.shape)
            i += v.size
        return Params(out)

    def map(self, fn: Callable[..., Any], *others: Params) -> Params:
        """``Params`` with ``fn(self[k], other[k], ...)`` for every name ``k``."""
        return Params({k: fn(v, *(o[k] for o in others)) for k, v in self._arrays.items()})

    def astype(self, dtype: Any) -> Params:
        return self.map(lambda v: v.astype(dtype))

    def all_finite(self) -> bool:
        """True if no array holds NaN or Inf (checked where the arrays live)."""
        return all(bool(array_namespace(v).isfinite(v).all()) for v in self._arrays.values())


class Parametrized:
    """What models and vector fields share: parameters (:class:`Params`), replacing them, and
    quantities derived from them, cached per parameter set."""

    _params: Params
    _derived: dict[str, Any]

    # -- parameters -------------------------------------------------------------------------
    @property
    def params(self) -> Params:
        """The parameters: a mapping of names to arrays (see :class:`Params`)."""
        return self._params

    @property
    def dtype(self) -> np.dtype:
        return self._params.dtype

    def replace(self, params: Params | None = None, **arrays: Any) -> Any:
        """A new model with the parameters replaced (``params=`` whole, or some by name)."""
        new = copy.copy(self)
        base = self._params if params is None else params
        if params is not None and list(params) != list(self._params):
            raise ValueError(f"params must have the names {list(self._params)}")
        new._params = base.replace(**arrays) if arrays else Params(base)
        new._derived = {}
        return new

    def astype(self, dtype: Any) -> Any:
        """The same model with parameters cast to ``dtype``."""
        return self.replace(self._params.astype(dtype))

    def to(self, xp: Any) -> Any:
        """The same model with its parameters in the array namespace ``xp`` (``numpy`` or
        ``cupy``): itself if they are there already, else a copy whose parameters were moved
        (``xp.asarray``)."""
        moved = self._params.map(xp.asarray)
        if all(m is v for m, v in zip(moved.values(), self._params.values(), strict=True)):
            return self
        return self.replace(moved)

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """A quantity derived from the parameters, computed once per parameter set."""
        if name not in self._derived:
            self._derived[name] = compute()
        return self._derived[name]


class Model(Parametrized):
    """Base class of models. Subclasses set ``params`` and implement the protocol.

    Required: ``f``, ``jacobian``, ``vjp_params`` (and ``vjp_inputs`` if the model has
    inputs). ``jvp``, ``vjp_h`` and ``diagonal_jacobian`` default to forms built from
    ``jacobian`` (O(D²) memory per step); built-in models override them with matrix-free forms.
    ``sequential`` and ``bptt`` default to Python loops over time; a model with compiled loops
    implements the hooks ``_loop`` and ``_loop_bptt`` (see ``pitsolve.models._loops``), which
    they call on a backend that runs compiled kernels.

    Attributes
    ----------
    state_dim
        D.
    input_dim
        N_x, 0 for autonomous models.
    jacobian_structure
        ``"dense"`` or ``"diagonal"``.
    is_affine
        True if f is affine in h with a Jacobian independent of h (then one scan
        solves the recurrence exactly and DEER converges in one iteration).
    """

    jacobian_structure: ClassVar[str] = "dense"
    is_affine: ClassVar[bool] = False
    #: the compiled-loop hooks (None: the generic loops); see ``pitsolve.models._loops``
    _loop: Any = None
    _loop_bptt: Any = None
    _backend: Backend | None = None

    def __init__(self, params: Params, *, state_dim: int, input_dim: int = 0):
        self._params = params
        self.state_dim = int(state_dim)
        self.input_dim = int(input_dim)
        self._derived: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_dim={self.state_dim}, input_dim={self.input_dim})"

    # -- the backend --------------------------------------------------------------------------
    def on(self, backend: str | Backend) -> Any:
        """The same model computing on ``backend`` (a :class:`~pitsolve.backends.Backend` or
        its name): on ``"numba"`` built-in models evaluate with their compiled kernels, on
        ``"numpy"`` and ``"cupy"`` with the array-namespace code. A solve binds its model
        this way; an unbound model uses the default backend of the arrays it is given.
        The parameters follow to the backend's device (:meth:`~Parametrized.to`); on the
        same device they and the cached quantities are shared with this model."""
        backend = get_backend(backend)
        new = self.to(backend.xp)
        if new is self:
            new = copy.copy(self)
        new._backend = backend
        return new

    @property
    def backend(self) -> Backend | None:
        """The backend set by :meth:`on` (None: the default of each call's arrays)."""
        return self._backend

    def _backend_for(self, *arrays: Any) -> Backend:
        """The backend this model computes with for ``arrays``."""
        return self._backend if self._backend is not None else for_arrays(*arrays)

    # -- what training needs --------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor's keywords other than the arrays (sizes, options), JSON-able:
        ``type(model).from_config(model.config(), model.params)`` rebuilds the model, which is
        how checkpoints store it.

        Raises
        ------
        NotImplementedError
            For a model that does not describe itself (the built-in ones do).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not describe its configuration (config()), so it "
            "cannot be saved and rebuilt"
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
        """The model with keywords ``config`` (from :meth:`config`) and parameters ``params``."""
        return cls(**config, params=params)

    def regularization_target(self) -> Params:
        r""":math:`\theta^\star`, the parameters a regulariser
        :math:`\lambda\sum_k\|\theta_k - \theta_k^\star\|^2` pulls towards: zero by default
        (weight decay); models override it (the shPLRNN family: :math:`a^\star = 1`)."""
        return self.params.map(lambda v: array_namespace(v).zeros_like(v))

    # -- the protocol -----------------------------------------------------------------------
    def f(self, h: Any, x: Any = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def jacobian(self, h: Any, x: Any = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        if self.input_dim:
            raise NotImplementedError(f"{type(self).__name__} must implement vjp_inputs")
        return None

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """f and its Jacobian together (models fuse them where that saves work)."""
        return self.f(h, x), self.jacobian(h, x)

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J` (quasi-DEER)."""
        J = self.jacobian(h, x)
        if self.jacobian_structure == "diagonal":
            return J
        return array_namespace(J).diagonal(J, axis1=-2, axis2=-1).copy()

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        return self.f(h, x), self.diagonal_jacobian(h, x)

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        """J v."""
        J = self.jacobian(h, x)
        if self.jacobian_structure == "diagonal":
            return J * v
        return array_namespace(J).matmul(J, v[..., None])[..., 0]

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`J^\top u`."""
        J = self.jacobian(h, x)
        if self.jacobian_structure == "diagonal":
            return J * u
        return array_namespace(J).matmul(u[..., None, :], J)[..., 0, :]

    def linearize(self, h: Any, x: Any = None) -> Linearization:
        r"""The Jacobians :math:`J = \partial f/\partial h` at ``(h, x)`` as a
        :class:`Linearization`, whose ``jvp(v)`` and ``vjp(u)`` apply :math:`J` and
        :math:`J^\top` without evaluating f again.

        Matrix-free solvers apply the same Jacobians many times (one GMRES iteration each):
        a model overrides this to evaluate f's internals once and cache what the products
        need (for :class:`~pitsolve.models.Elman`, :math:`1 - y^2`). The default calls
        :meth:`jvp` and :meth:`vjp_h` with the stored arguments.
        """
        return Linearization(self, h, x)

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The trajectory ``(..., T, D)`` by stepping f: the compiled loop of a built-in model
        on the Numba backend (computed in the dtype of ``h0``), else a Python loop over t,
        vectorised over the batch."""
        out = run_loop(self, h0, inputs, T)
        return step_loop(self, h0, inputs, T) if out is None else out

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        r"""Backpropagation through time: the gradients of a loss L of the trajectory.

        Given :math:`g_t = \partial L/\partial h_t` (t = 1..T) along the trajectory ``states``
        of :math:`h_t = f(h_{t-1}, x_t)`, the adjoint recursion

        .. math::

            \lambda_T = g_T,\quad \lambda_t = g_t + J_{t+1}^\top \lambda_{t+1},\quad
            \bar\theta = \sum_t (\partial f/\partial\theta)(h_{t-1}, x_t)^\top \lambda_t,\\
            \bar h_0 = J_1^\top \lambda_1,\quad
            \bar x_t = (\partial f/\partial x)(h_{t-1}, x_t)^\top \lambda_t

        is computed sequentially, backwards in time (MATH.md §4), with every step's
        derivatives evaluated at the given ``states``.

        Parameters
        ----------
        h0 : ``(..., D)``, the initial state.
        inputs : ``(..., T, N_x)`` (or more than T steps; the first T are used), or None.
        states : ``(..., T, D)``, the trajectory :math:`h_1, \dots, h_T`.
        g : ``(..., T, D)``, the cotangents :math:`\partial L/\partial h_t`.

        Returns
        -------
        ``(params_bar, h0_bar, inputs_bar)``: :class:`Params` summed over all batch axes, and
        cotangents with the shapes of ``h0`` and ``inputs`` (summed over the axes they were
        broadcast along); ``inputs_bar`` is None when ``inputs`` is None. Everything is
        computed in, and returned in, the dtype of ``states``.

        Notes
        -----
        A built-in model on the Numba backend runs its compiled backward loop; otherwise this
        is a Python loop over t of the model's ``vjp_h``, ``vjp_params`` and ``vjp_inputs``,
        vectorised over the batch axes, correct for any model.
        """
        compiled = run_loop_bptt(self, h0, inputs, states, g)
        if compiled is not None:
            return compiled
        xp = array_namespace(h0, inputs, states, g)
        dtype = states.dtype
        D = self.state_dim
        T, lead = bptt_shapes(D, h0, inputs, states, g)

        S = xp.broadcast_to(states.astype(dtype, copy=False), (*lead, T, D))
        G = xp.broadcast_to(g.astype(dtype, copy=False), (*lead, T, D))
        H0 = xp.broadcast_to(h0.astype(dtype, copy=False), (*lead, D))
        X = None
        if inputs is not None:
            X = inputs[..., :T, :].astype(dtype, copy=False)
            X = xp.broadcast_to(X, (*lead, T, inputs.shape[-1]))

        def cast(a: Any) -> Any:
            return a.astype(dtype, copy=False)

        params_bar = self.params.map(lambda v: xp.zeros(v.shape, dtype=dtype))
        h0_bar = xp.zeros((*lead, D), dtype=dtype)
        x_bar = None if X is None else xp.zeros(X.shape, dtype=dtype)
        lam = None
        for t in range(T - 1, -1, -1):
            lam = G[..., t, :] if lam is None else G[..., t, :] + cast(lam)
            h_prev = S[..., t - 1, :] if t > 0 else H0
            x = None if X is None else X[..., t, :]
            gp = self.vjp_params(h_prev, x, lam)
            params_bar = params_bar.map(lambda a, b: a + cast(xp.asarray(b)), gp)
            if x_bar is not None:
                xb = self.vjp_inputs(h_prev, x, lam)
                if xb is not None:
                    x_bar[..., t, :] = cast(xb)
            lam = self.vjp_h(h_prev, x, lam)
        if lam is not None:
            h0_bar = cast(lam)
        inputs_bar = None
        if inputs is not None:
            inputs_bar = xp.zeros((*lead, *inputs.shape[-2:]), dtype=dtype)
            inputs_bar[..., :T, :] = x_bar
            inputs_bar = sum_to(inputs_bar, inputs.shape)
        return params_bar, sum_to(h0_bar, h0.shape), inputs_bar


class Linearization:
    r"""The Jacobians :math:`J = \partial f/\partial h\,(h, x)` of a model at fixed
    arguments, applied as products: :meth:`jvp` gives :math:`J v`, :meth:`vjp` gives
    :math:`J^\top u`, for ``v``, ``u`` of the shape of ``h``.

    This default stores ``(model, h, x)`` and calls ``model.jvp(h, x, v)`` and
    ``model.vjp_h(h, x, u)``, so it is exact for every model but re-evaluates f's internals
    at each product. Models override :meth:`Model.linearize` to return a subclass that
    caches them once. ``h`` and ``x`` are held by reference: do not modify them while the
    linearization is in use.
    """

    def __init__(self, model: Any, h: Any, x: Any = None):
        self.model, self.h, self.x = model, h, x

    def jvp(self, v: Any, out: Any = None) -> Any:
        """:math:`J v`; written into ``out`` (of the shape and dtype of ``v``) when given."""
        return _into(self.model.jvp(self.h, self.x, v), out)

    def vjp(self, u: Any, out: Any = None) -> Any:
        r""":math:`J^\top u`; written into ``out`` when given."""
        return _into(self.model.vjp_h(self.h, self.x, u), out)


def _into(value: Any, out: Any) -> Any:
    if out is None:
        return value
    out[...] = value
    return out


def to_namespace(model: Any, xp: Any) -> Any:
    """``model.to(xp)``: its parameters in the array namespace ``xp``; a duck-typed model
    without ``to`` as it is."""
    to = getattr(model, "to", None)
    return model if to is None else to(xp)


def linearize(model: Any, h: Any, x: Any = None) -> Linearization:
    """``model.linearize(h, x)``, or the default :class:`Linearization` for models (duck-typed
    ones included) that do not define it."""
    method = getattr(model, "linearize", None)
    return Linearization(model, h, x) if method is None else method(h, x)


def step_loop(model: Any, h0: Any, inputs: Any, T: int) -> Any:
    """h_t = model.f(h_{t-1}, x_t) for t = 1..T as a Python loop, vectorised over the batch."""
    xp = array_namespace(h0, inputs)
    out = xp.empty((*h0.shape[:-1], T, h0.shape[-1]), dtype=h0.dtype)
    h = h0
    for t in range(T):
        h = model.f(h, None if inputs is None else inputs[..., t, :])
        out[..., t, :] = h
    return out

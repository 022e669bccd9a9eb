r"""Benchmark flows :math:`\dot x = g(x; p)` written once, as entries of a :class:`FlowTable`.

An entry is a decorated function (the table itself is in :mod:`pitsolve.dsr.systems`)::

    @TABLE.entry(
        Components(
            lambda x, y, z, a: (...),          # g, component by component
            lambda x, y, z, a: ((...), ...),   # ∂g/∂x, row by row
        ),
        initial_condition=(1.0, 1.0, 1.0),
        perturbation=1.0,
        lyapunov_max=...,
        lyapunov_source="...",
    )
    def name(T=100_000, dt=0.1, *, seed=0, transient=100.0, noise=0.0, zscore=True, a=0.2):
        r'''The equations, and what is known of the system.'''

The decorated function's body is never run: it states the generator's public signature — the
default ``dt``, ``transient`` and parameters are read from it — and its docstring, and is
replaced by the generator built from the entry, with that signature and docstring. (A
function, rather than a row of data, keeps both visible to readers and to the API
documentation, which reads the source.) Everything else is derived from the entry: the
argument checks, the right-hand side given to the integrator, and the batched vector field
and Jacobian of the registry.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ._sampling import check_real, simulate

__all__ = ["Components", "FlowSpec", "FlowTable", "Ring"]

# the generator arguments every system shares; the others are the system's parameters
_COMMON = ("T", "dt", "seed", "transient", "noise", "zscore")


# --------------------------------------------------------------------------------------------
# The two ways of writing g and ∂g/∂x. Both give, for the parameters p (a dict, or a tuple
# of the vector field's parameters in the generator's order): size(p), the state dimension;
# field_params(names), the names the vector field takes; check(name, value), the argument
# check; field(x, p) and jacobian(x, p), batched over the leading axes of x; rhs(p), the
# right-hand side f(t, x) given to the integrator.
# --------------------------------------------------------------------------------------------


def _split(x: Any, n: int) -> tuple[np.ndarray, ...]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"x must have shape (..., {n}), got {x.shape}")
    return tuple(x[..., i] for i in range(n))


def _stack(components: Sequence[Any]) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*components), axis=-1)


def _matrix(rows: Sequence[Sequence[Any]], batch: tuple[int, ...]) -> np.ndarray:
    n = len(rows)
    J = np.empty((*batch, n, n))
    for i, row in enumerate(rows):
        for j, entry in enumerate(row):
            J[..., i, j] = entry
    return J


@dataclass(frozen=True)
class Components:
    r""":math:`g` and :math:`\partial g/\partial x` of an n-dimensional flow, component-wise.

    ``terms(x_1, ..., x_n, *p)`` returns :math:`(g_1, \dots, g_n)` and
    ``rows(x_1, ..., x_n, *p)`` the rows of :math:`\partial g/\partial x`, with the parameters
    p in the generator's order. Each formula is written once and works on floats (the
    integrator's right-hand side, where NumPy's per-call overhead would dominate) and on
    arrays (the batched vector field and Jacobian) alike.
    """

    terms: Callable[..., tuple[Any, ...]]
    rows: Callable[..., Sequence[Sequence[Any]]]
    _names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(inspect.signature(self.terms).parameters)
        if tuple(inspect.signature(self.rows).parameters) != names:
            raise TypeError(f"terms and rows must take the same arguments {names}")
        object.__setattr__(self, "_names", names)

    def size(self, params: dict[str, Any]) -> int:
        """n, checking that the formulas take ``(x_1, ..., x_n, *params)``."""
        n = len(self._names) - len(params)
        if list(self._names[n:]) != list(params):
            raise TypeError(f"terms and rows must take (x_1, ..., x_n, {', '.join(params)})")
        return n

    def field_params(self, params: Sequence[str]) -> tuple[str, ...]:
        return tuple(params)

    def check(self, name: str, value: Any) -> Any:
        return check_real(value, name)

    def field(self, x: Any, p: tuple[Any, ...]) -> np.ndarray:
        return _stack(self.terms(*_split(x, len(self._names) - len(p)), *p))

    def jacobian(self, x: Any, p: tuple[Any, ...]) -> np.ndarray:
        u = _split(x, len(self._names) - len(p))
        return _matrix(self.rows(*u, *p), u[0].shape)

    def rhs(self, p: tuple[Any, ...]) -> Callable[[float, np.ndarray], np.ndarray]:
        terms = self.terms

        def rhs(t: float, u: np.ndarray) -> np.ndarray:
            return np.array(terms(*u.tolist(), *p))

        return rhs


@dataclass(frozen=True)
class Ring:
    r""":math:`g` and :math:`\partial g/\partial x` of a flow on a ring of N sites.

    Written on whole states: ``field(x, *p)`` and ``jacobian(x, *p)`` for x of shape
    ``(..., N)``, N read from the last axis. N is the generator's parameter ``sites``, an
    integer of at least ``min_sites``, and not a parameter of the vector field; ``title``
    names the system in the error messages.
    """

    field_fn: Callable[..., np.ndarray]
    jacobian_fn: Callable[..., np.ndarray]
    title: str
    sites: str = "N"
    min_sites: int = 4

    def size(self, params: dict[str, Any]) -> int:
        return params[self.sites]

    def field_params(self, params: Sequence[str]) -> tuple[str, ...]:
        return tuple(k for k in params if k != self.sites)

    def check(self, name: str, value: Any) -> Any:
        if name != self.sites:
            return check_real(value, name)
        n = check_positive_int(value, name)
        if n < self.min_sites:
            raise ValueError(f"{name} must be >= {self.min_sites} for {self.title}, got {n}")
        return n

    def _states(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] < self.min_sites:
            raise ValueError(
                f"x must have shape (..., {self.sites}) with {self.sites} >= {self.min_sites}, "
                f"got {x.shape}"
            )
        return x

    def field(self, x: Any, p: tuple[Any, ...]) -> np.ndarray:
        return np.ascontiguousarray(self.field_fn(self._states(x), *p))

    def jacobian(self, x: Any, p: tuple[Any, ...]) -> np.ndarray:
        return self.jacobian_fn(self._states(x), *p)

    def rhs(self, p: tuple[Any, ...]) -> Callable[[float, np.ndarray], np.ndarray]:
        field_fn = self.field_fn

        def rhs(t: float, u: np.ndarray) -> np.ndarray:
            return field_fn(u, *p)

        return rhs


# --------------------------------------------------------------------------------------------
# One entry, and the table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSpec:
    """One benchmark flow: an entry of a :class:`FlowTable` (see the module docstring).

    Attributes
    ----------
    name : the generator's name, the registry key.
    generate : the public generator built from the entry.
    equations : :math:`g` and its Jacobian, as :class:`Components` or :class:`Ring`.
    signature : the generator's signature; its defaults are the system's defaults.
    initial_condition : the standard initial condition, or a function of the parameters
        returning it (when its size depends on them).
    perturbation : standard deviation of the seeded draw around the initial condition.
    lyapunov_max, lyapunov_source : the reference maximal Lyapunov exponent per time unit
        and where it comes from.
    """

    name: str
    generate: Callable[..., np.ndarray] = field(repr=False)
    equations: Components | Ring = field(repr=False)
    signature: inspect.Signature = field(repr=False)
    initial_condition: tuple[float, ...] | Callable[..., Any]
    perturbation: float
    lyapunov_max: float
    lyapunov_source: str

    @property
    def params(self) -> dict[str, Any]:
        """The default parameters, in the generator's order."""
        return {k: p.default for k, p in self.signature.parameters.items() if k not in _COMMON}

    @property
    def dt(self) -> float:
        return self.signature.parameters["dt"].default

    @property
    def transient(self) -> float:
        return self.signature.parameters["transient"].default

    @property
    def dim(self) -> int:
        return self.equations.size(self.params)

    def start(self, params: dict[str, Any]) -> np.ndarray:
        """The standard initial condition at the parameters ``params``."""
        ic = self.initial_condition
        return np.asarray(ic(**params) if callable(ic) else ic, dtype=np.float64)

    @functools.cached_property
    def vector_field(self) -> Callable[..., np.ndarray]:
        r""":math:`g`, ``vector_field(x, **params)`` batched over the leading axes of x."""
        return self._with_params(self.equations.field, "vector_field")

    @functools.cached_property
    def jacobian(self) -> Callable[..., np.ndarray]:
        r""":math:`\partial g/\partial x`, ``jacobian(x, **params)`` returning ``(..., N, N)``."""
        return self._with_params(self.equations.jacobian, "jacobian")

    def _with_params(self, evaluate: Callable, what: str) -> Callable[..., np.ndarray]:
        defaults = {k: self.params[k] for k in self.equations.field_params(list(self.params))}
        name = self.name

        def call(x: Any, **params: Any) -> np.ndarray:
            for k in params:
                if k not in defaults:
                    raise TypeError(f"{name} {what}() got an unexpected keyword argument {k!r}")
            p = {**defaults, **params}
            return evaluate(x, tuple(p[k] for k in defaults))

        kw = inspect.Parameter.KEYWORD_ONLY
        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Any")]
            + [inspect.Parameter(k, kw, default=v, annotation="float") for k, v in defaults.items()]
        )
        call.__name__ = call.__qualname__ = f"{name}_{what}"
        return call

    def sample(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> np.ndarray:
        """The generator: check the arguments, then integrate and observe."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None
        bound.apply_defaults()
        given = bound.arguments
        p = {k: self.equations.check(k, given[k]) for k in self.params}
        rhs = self.equations.rhs(tuple(p[k] for k in self.equations.field_params(list(p))))
        return simulate(
            self.name,
            rhs,
            p,
            (self.start(p), self.perturbation),
            **{k: given[k] for k in _COMMON},
        )


class FlowTable(dict[str, FlowSpec]):
    """The benchmark flows by name, in the order they were entered."""

    def entry(
        self,
        equations: Components | Ring,
        *,
        initial_condition: tuple[float, ...] | Callable[..., Any],
        perturbation: float,
        lyapunov_max: float,
        lyapunov_source: str,
    ) -> Callable[[Callable[..., Any]], Callable[..., np.ndarray]]:
        """Enter the flow whose signature and docstring the decorated function gives.

        Returns the decorator; it returns the generator, with the decorated function's name,
        signature and docstring.
        """

        def enter(face: Callable[..., Any]) -> Callable[..., np.ndarray]:
            signature = inspect.signature(face)
            missing = [k for k in _COMMON if k not in signature.parameters]
            if missing:
                raise TypeError(f"{face.__name__} must take the arguments {missing}")

            @functools.wraps(face)
            def generate(*args: Any, **kwargs: Any) -> np.ndarray:
                return spec.sample(args, kwargs)

            spec = FlowSpec(
                name=face.__name__,
                generate=generate,
                equations=equations,
                signature=signature,
                initial_condition=initial_condition,
                perturbation=perturbation,
                lyapunov_max=lyapunov_max,
                lyapunov_source=lyapunov_source,
            )
            dim = spec.dim  # also checks that the formulas take the parameters, in order
            if not callable(initial_condition) and dim != len(initial_condition):
                raise TypeError(f"{spec.name}: initial_condition must have one entry per x_i")
            self[spec.name] = spec
            return generate

        return enter

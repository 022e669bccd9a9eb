r"""Check a model's hand-derived derivatives against central finite differences.

For a step :math:`f(h, x; \theta)` and random directions :math:`v, u, w, d\theta`, with the
central difference :math:`\delta_\varepsilon g(p; d) = (g(p + \varepsilon d) - g(p - \varepsilon d))
/ 2\varepsilon` and :math:`\varepsilon = \sqrt{\epsilon_{64}}\,\max(1, \|p\|_\infty)`:

=============================  ==========================================================
``jacobian``                   :math:`J v` (diagonal structure :math:`J \odot v`) vs
                               :math:`\delta_\varepsilon f(h; v)`
``diagonal_jacobian``          vs the diagonal of ``jacobian`` (itself checked above)
``jvp``                        vs :math:`\delta_\varepsilon f(h; v)`
``vjp_h``                      :math:`\langle u, \delta_\varepsilon f(h; v)\rangle` vs
                               :math:`\langle \mathrm{vjp\_h}(u), v\rangle`
``vjp_params[name]``           :math:`\sum \langle u, \delta_\varepsilon f(\theta; d\theta)\rangle`
                               vs :math:`\langle \mathrm{vjp\_params}(u), d\theta\rangle`, one
                               direction per parameter array, summed over all leading axes
``vjp_inputs``                 :math:`\langle u, \delta_\varepsilon f(x; w)\rangle` vs
                               :math:`\langle \mathrm{vjp\_inputs}(u), w\rangle` (models with
                               inputs)
``f_and_jacobian`` …           the fused forms vs ``f`` and ``jacobian`` /
                               ``diagonal_jacobian``
``linearize``                  its ``jvp(v)`` and ``vjp(u)`` (also into ``out=``) vs ``jvp``
                               and ``vjp_h`` (models without ``linearize`` get the default)
=============================  ==========================================================

Each check passes when :math:`|a - b| \le \mathrm{atol} + \mathrm{rtol}\,s + r` for every batch
point, with

- :math:`s = \max(|a|, |b|)` (vectors compared in the max-norm); for dot products :math:`s` is
  at least the Cauchy–Schwarz bound :math:`\|u\|\|\delta f\|`, so that nearly orthogonal
  random directions cannot make round-off look like an error;
- :math:`r = 16\,\epsilon_{64} |f| / \varepsilon`, the round-off a central difference of
  :math:`f` carries whatever the derivative (zero when no finite difference is involved). It
  matters only where the derivative is tiny next to :math:`|f|`; such a pass says
  "within FD round-off".

Directions :math:`v, w, d\theta` have unit max-norm. The reported error is the largest
:math:`|a - b| / \max(s, \mathrm{tiny})`. Everything runs in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import array_namespace, to_numpy
from ..models.base import linearize

__all__ = ["DerivativeCheck", "DerivativeReport", "check_derivatives"]

_EPS = float(np.finfo(np.float64).eps)
_SQRT_EPS = float(np.sqrt(_EPS))
_TINY = float(np.finfo(np.float64).tiny)
_ROUNDOFF_ULPS = 16.0


@dataclasses.dataclass(frozen=True)
class DerivativeCheck:
    """One comparison: ``name`` of the derivative, its largest relative ``error``, ``passed``.

    ``detail`` says what was compared with what, or why the check could not run.
    """

    name: str
    error: float
    passed: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class DerivativeReport:
    """The result of :func:`check_derivatives`: one :class:`DerivativeCheck` per derivative."""

    model: str
    checks: tuple[DerivativeCheck, ...]
    rtol: float
    atol: float
    batch_shape: tuple[int, ...]

    @property
    def passed(self) -> bool:
        """True if every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[DerivativeCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def __getitem__(self, name: str) -> DerivativeCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks are {[c.name for c in self.checks]}")

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        width = max([len(c.name) for c in self.checks] + [len("derivative")])
        lines = [
            f"check_derivatives({self.model}): rtol={self.rtol:g}, atol={self.atol:g}, "
            f"batch {self.batch_shape}, float64 central differences",
            f"  {'derivative':<{width}}  {'rel. error':>10}  result  compared",
        ]
        for c in self.checks:
            err = f"{c.error:10.2e}" if np.isfinite(c.error) else f"{c.error!s:>10}"
            lines.append(
                f"  {c.name:<{width}}  {err}  {'ok' if c.passed else 'FAIL':<6}  {c.detail}"
            )
        lines.append("all passed" if self.passed else f"{len(self.failures)} failed")
        return "\n".join(lines)


def _compare(
    name: str,
    a: Any,
    b: Any,
    rtol: float,
    atol: float,
    detail: str,
    *,
    vectors: bool = False,
    bound: Any = 0.0,
    noise: Any = 0.0,
) -> DerivativeCheck:
    """Compare ``a`` and ``b`` per batch point: scalars ``(...)`` or vectors ``(..., n)``.

    ``bound`` (dot-product tests) raises the scale ``max(|a|, |b|)``; ``noise`` (the finite
    differences' round-off, same shape as ``b``) is allowed on top of ``atol + rtol·scale``.
    """
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    if a.shape != b.shape:
        return DerivativeCheck(name, np.inf, False, f"shape {a.shape} != expected {b.shape}")
    diff = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.abs(b))
    noise = np.broadcast_to(np.asarray(to_numpy(noise), dtype=np.float64), a.shape)
    if vectors and a.ndim > 0:
        diff, scale = diff.max(axis=-1, initial=0.0), scale.max(axis=-1, initial=0.0)
        noise = noise.max(axis=-1, initial=0.0)
    scale = np.maximum(scale, np.asarray(to_numpy(bound), dtype=np.float64))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return DerivativeCheck(name, np.nan, False, detail + "; non-finite values")
    rel = diff / np.maximum(scale, _TINY)
    tol = atol + rtol * scale
    ok = bool(np.all(diff <= tol + noise))
    if ok and not np.all(diff <= tol):
        detail += " (within FD round-off)"
    return DerivativeCheck(name, float(np.max(rel, initial=0.0)), ok, detail)


def _dot_test(
    name: str,
    g: Any,
    d: Any,
    u: Any,
    fd: tuple[Any, Any],
    rtol: float,
    atol: float,
    detail: str,
    axis: Any,
) -> DerivativeCheck:
    r"""Dot-product test :math:`\langle g, d\rangle` vs :math:`\langle u, \delta f\rangle`.

    The scale is at least the Cauchy–Schwarz bound :math:`\max(\|g\|\|d\|, \|u\|\|\delta f\|)`,
    so that a random pair that happens to be nearly orthogonal does not turn the finite
    differences' round-off into a false failure.
    """
    fd, noise = fd
    xp = array_namespace(g, d, u, fd)

    def norm(z: Any) -> Any:
        return xp.sqrt(xp.sum(z * z, axis=axis))

    bound = xp.maximum(norm(g) * norm(d), norm(u) * norm(fd))
    lhs, rhs = xp.sum(g * d, axis=axis), xp.sum(u * fd, axis=axis)
    noise = xp.sum(xp.abs(u) * noise, axis=axis)
    return _compare(name, lhs, rhs, rtol, atol, detail, bound=bound, noise=noise)


def _guard(name: str, fn: Callable[[], DerivativeCheck]) -> DerivativeCheck:
    """Run one check; an exception becomes a failed check naming it."""
    try:
        return fn()
    except Exception as exc:
        return DerivativeCheck(name, np.nan, False, f"raised {type(exc).__name__}: {exc}")


def _central(g: Callable[[Any], Any], p: Any, d: Any, eps: Any) -> tuple[Any, Any]:
    r"""Central difference of ``g`` at ``p`` along ``d`` and its round-off estimate.

    :math:`(g(p + \varepsilon d) - g(p - \varepsilon d)) / 2\varepsilon`; evaluating ``g``
    rounds each component by a few ulps of its value, so the quotient carries an error of about
    :math:`\epsilon |g| / \varepsilon` (``_ROUNDOFF_ULPS`` ulps are allowed).
    """
    xp = array_namespace(p)
    plus, minus = g(p + eps * d), g(p - eps * d)
    noise = _ROUNDOFF_ULPS * _EPS * xp.maximum(xp.abs(plus), xp.abs(minus)) / eps
    return (plus - minus) / (2 * eps), noise


def _step(p: Any) -> Any:
    """The central-difference step ε = √eps · max(1, ‖p‖_∞) per batch point, shape ``(..., 1)``."""
    xp = array_namespace(p)
    return _SQRT_EPS * xp.maximum(1.0, xp.max(xp.abs(p), axis=-1, keepdims=True))


def _unit(d: Any) -> Any:
    """``d`` scaled to unit max-norm along the last axis."""
    xp = array_namespace(d)
    return d / xp.maximum(xp.max(xp.abs(d), axis=-1, keepdims=True), _TINY)


def _matvec(J: Any, v: Any, structure: str) -> Any:
    if structure == "diagonal":
        return J * v
    return array_namespace(J).matmul(J, v[..., None])[..., 0]


def check_derivatives(
    model: Any,
    h: Any = None,
    x: Any = None,
    *,
    seed: int = 0,
    batch_shape: tuple[int, ...] = (4,),
    rtol: float = 1e-6,
    atol: float = 1e-8,
    raise_on_error: bool = True,
) -> DerivativeReport:
    r"""Compare every derivative of ``model`` with central finite differences in float64.

    The model is cast to float64 (``model.astype(np.float64)``); points ``h`` (and inputs ``x``
    for models with ``input_dim > 0``) and all directions are drawn from
    ``numpy.random.default_rng(seed)`` as standard normals unless given. See the module
    docstring for the list of checks.

    Parameters
    ----------
    model : any object implementing the pitsolve model protocol (``f``, ``jacobian``,
        ``vjp_params``, ...; typically a :class:`~pitsolve.models.Model` subclass).
    h : optional points ``(..., D)``; default standard normal of shape ``(*batch_shape, D)``.
    x : optional inputs ``(..., N_x)`` with the leading axes of ``h``.
    seed : seed of the random points and directions.
    batch_shape : leading axes of the drawn points (ignored when ``h`` is given).
    rtol, atol : a check passes when ``|a − b| ≤ atol + rtol·max(|a|, |b|)`` at every point
        (plus the finite differences' own round-off, see the module docstring).
    raise_on_error : raise ``AssertionError`` naming every failed derivative.

    Returns
    -------
    DerivativeReport
        ``str(report)`` is a table; ``report.passed``, ``report.failures``, ``report[name]``.

    Raises
    ------
    AssertionError
        If ``raise_on_error`` and a check failed (the message holds the table).
    """
    if hasattr(model, "astype"):
        model = model.astype(np.float64)
    params = model.params
    xp = array_namespace(*params.values()) if len(params) else np
    rng = np.random.default_rng(seed)
    D = int(model.state_dim)
    n_x = int(getattr(model, "input_dim", 0) or 0)
    structure = getattr(model, "jacobian_structure", "dense")

    def draw(shape: tuple[int, ...]) -> Any:
        return xp.asarray(rng.normal(0.0, 1.0, shape))

    if h is None:
        h = draw((*tuple(batch_shape), D))
    else:
        h = xp.asarray(to_numpy(h), dtype=np.float64)
    lead = tuple(h.shape[:-1])
    if n_x:
        x = draw((*lead, n_x)) if x is None else xp.asarray(to_numpy(x), dtype=np.float64)
    else:
        x = None
    # directions of unit max-norm per point: the finite differences' round-off is
    # ~ eps·|f|/ε whatever the direction's length, so a short direction would drown in it
    v, u = _unit(draw(h.shape)), draw(h.shape)
    w = _unit(draw(x.shape)) if x is not None else None

    fd_v = _central(lambda hh: model.f(hh, x), h, v, _step(h))
    Jv = "J⊙v" if structure == "diagonal" else "J v"

    def jacobian_check() -> DerivativeCheck:
        J = model.jacobian(h, x)
        expected = h.shape if structure == "diagonal" else (*h.shape, D)
        if tuple(J.shape) != expected:
            return DerivativeCheck(
                "jacobian", np.inf, False, f"shape {tuple(J.shape)} != {expected} ({structure})"
            )
        return _compare(
            "jacobian",
            _matvec(J, v, structure),
            fd_v[0],
            rtol,
            atol,
            f"{Jv} vs FD of f",
            vectors=True,
            noise=fd_v[1],
        )

    def diagonal_check() -> DerivativeCheck:
        J = model.jacobian(h, x)
        ref = J if structure == "diagonal" else array_namespace(J).diagonal(J, 0, -2, -1)
        return _compare(
            "diagonal_jacobian",
            model.diagonal_jacobian(h, x),
            ref,
            rtol,
            atol,
            "vs diagonal of jacobian",
            vectors=True,
        )

    def jvp_check() -> DerivativeCheck:
        return _compare(
            "jvp",
            model.jvp(h, x, v),
            fd_v[0],
            rtol,
            atol,
            "J v vs FD of f",
            vectors=True,
            noise=fd_v[1],
        )

    def vjp_h_check() -> DerivativeCheck:
        g = model.vjp_h(h, x, u)
        if tuple(g.shape) != tuple(h.shape):
            return DerivativeCheck("vjp_h", np.inf, False, f"shape {tuple(g.shape)} != {h.shape}")
        return _dot_test("vjp_h", g, v, u, fd_v, rtol, atol, "⟨Jᵀu, v⟩ vs ⟨u, FD⟩", -1)

    def inputs_check() -> DerivativeCheck:
        g = model.vjp_inputs(h, x, u)
        if g is None or tuple(g.shape) != tuple(x.shape):
            got = None if g is None else tuple(g.shape)
            return DerivativeCheck("vjp_inputs", np.inf, False, f"shape {got} != {x.shape}")
        fd_w = _central(lambda xx: model.f(h, xx), x, w, _step(x))
        return _dot_test("vjp_inputs", g, w, u, fd_w, rtol, atol, "⟨vjp(u), w⟩ vs ⟨u, FD⟩", -1)

    def fused_check(name: str, fused: Callable[..., Any], unfused: Callable[..., Any]) -> Any:
        def check() -> DerivativeCheck:
            f_val, d_val = fused(h, x)
            d_ref = unfused(h, x)
            if tuple(d_val.shape) != tuple(d_ref.shape):
                return DerivativeCheck(
                    name, np.inf, False, f"shape {tuple(d_val.shape)} != {tuple(d_ref.shape)}"
                )
            if d_ref.ndim > h.ndim:  # dense: compare (..., D*D)
                d_val, d_ref = d_val.reshape(*lead, D * D), d_ref.reshape(*lead, D * D)
            parts = (
                _compare(name, f_val, model.f(h, x), rtol, atol, "f part", vectors=True),
                _compare(name, d_val, d_ref, rtol, atol, "Jacobian part", vectors=True),
            )
            bad = [c for c in parts if not c.passed]
            detail = bad[0].detail if bad else f"vs f and {unfused.__name__}"
            return DerivativeCheck(name, max(c.error for c in parts), not bad, detail)

        return check

    def linearize_check() -> DerivativeCheck:
        lin = linearize(model, h, x)
        Jv, JTu = model.jvp(h, x, v), model.vjp_h(h, x, u)
        Jv_out = lin.jvp(v, out=xp.empty_like(Jv))
        JTu_out = lin.vjp(u, out=xp.empty_like(JTu))
        parts = [
            _compare("linearize", got, ref, rtol, atol, what, vectors=True)
            for got, ref, what in (
                (lin.jvp(v), Jv, "jvp part"),
                (Jv_out, Jv, "jvp part (out=)"),
                (lin.vjp(u), JTu, "vjp part"),
                (JTu_out, JTu, "vjp part (out=)"),
            )
        ]
        bad = [c for c in parts if not c.passed]
        detail = bad[0].detail if bad else "vs jvp and vjp_h"
        return DerivativeCheck("linearize", max(c.error for c in parts), not bad, detail)

    checks = [
        _guard("jacobian", jacobian_check),
        _guard("diagonal_jacobian", diagonal_check),
        _guard("jvp", jvp_check),
        _guard("vjp_h", vjp_h_check),
        *_param_checks(model, h, x, u, rng, xp, rtol, atol),
    ]
    if n_x:
        checks.append(_guard("vjp_inputs", inputs_check))
    for name, fused, unfused in (
        ("f_and_jacobian", model.f_and_jacobian, model.jacobian),
        ("f_and_diagonal_jacobian", model.f_and_diagonal_jacobian, model.diagonal_jacobian),
    ):
        checks.append(_guard(name, fused_check(name, fused, unfused)))
    checks.append(_guard("linearize", linearize_check))

    report = DerivativeReport(
        model=repr(model), checks=tuple(checks), rtol=rtol, atol=atol, batch_shape=lead
    )
    if raise_on_error and not report.passed:
        names = ", ".join(c.name for c in report.failures)
        raise AssertionError(f"derivatives failed: {names}\n{report}")
    return report


def _param_checks(
    model: Any,
    h: Any,
    x: Any,
    u: Any,
    rng: np.random.Generator,
    xp: Any,
    rtol: float,
    atol: float,
) -> list[DerivativeCheck]:
    r"""``vjp_params``: one dot-product test per parameter array, summed over leading axes."""
    params = model.params
    out: list[DerivativeCheck] = []
    try:
        grads = model.vjp_params(h, x, u)
    except Exception as exc:
        return [DerivativeCheck("vjp_params", np.nan, False, f"raised {type(exc).__name__}: {exc}")]
    names = list(params)
    if list(grads) != names:
        return [
            DerivativeCheck(
                "vjp_params", np.inf, False, f"names {list(grads)} != params names {names}"
            )
        ]
    for k in names:
        name = f"vjp_params[{k}]"

        def check(k: str = k, name: str = name) -> DerivativeCheck:
            theta = params[k]
            g = grads[k]
            if tuple(g.shape) != tuple(theta.shape):
                return DerivativeCheck(
                    name, np.inf, False, f"shape {tuple(g.shape)} != parameter {tuple(theta.shape)}"
                )
            d = xp.asarray(rng.normal(0.0, 1.0, tuple(theta.shape)))
            d = d / xp.max(xp.abs(d)) if d.size else d
            eps = _SQRT_EPS * max(1.0, float(xp.max(xp.abs(theta))) if theta.size else 1.0)
            fd = _central(lambda th: model.replace(**{k: th}).f(h, x), theta, d, eps)
            return _dot_test(name, g, d, u, fd, rtol, atol, "⟨vjp(u), dθ⟩ vs Σ⟨u, FD⟩", None)

        out.append(_guard(name, check))
    return out

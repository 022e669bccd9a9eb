r"""First-order optimisers on :class:`~pitsolve.models.base.Params`, written out by hand.

Adam (Kingma & Ba 2015) keeps exponential moving averages of the gradient and its square,

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
    \theta_t = \theta_{t-1} - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},

with bias corrections :math:`\hat m_t = m_t/(1-\beta_1^t)`, :math:`\hat v_t = v_t/(1-\beta_2^t)`.
RAdam (Liu et al., ICLR 2020) multiplies the adaptive step by a rectification :math:`r_t` that
removes the variance of the adaptive learning rate in the first steps, and takes plain momentum
steps while that variance is intractable. Both optimisers are frozen, keyword-only dataclasses
of options (no arrays); the moments live in an :class:`OptimizerState`:

.. code-block:: python

    opt = RAdam(lr=ExponentialDecay(lr_start=1e-3, lr_end=1e-6, steps=10_000), clip_norm=10.0)
    state = opt.init(params)
    params, state = opt.update(params, grads, state)

Arrays may be NumPy or CuPy (the parameters choose). :class:`ScipyObjective` adapts a
``fun(params) -> (loss, grads)`` to :func:`scipy.optimize.minimize` for full-batch training
with L-BFGS-B.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from ..backends import array_namespace, to_numpy
from ..models.base import Params

__all__ = [
    "Adam",
    "Constant",
    "ExponentialDecay",
    "Optimizer",
    "OptimizerState",
    "RAdam",
    "Schedule",
    "ScipyObjective",
    "as_schedule",
    "clip_by_global_norm",
    "global_norm",
]


# -- learning-rate schedules ------------------------------------------------------------------
class Schedule(Protocol):
    """A learning-rate schedule: ``lr(step)`` for ``step = 0, 1, 2, ...`` optimiser updates."""

    def __call__(self, step: int) -> float: ...  # pragma: no cover - protocol


def _positive_finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an integer, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be ≥ 0, got {step}")
    return int(step)


@dataclasses.dataclass(frozen=True)
class Constant:
    r"""The constant schedule :math:`\eta(s) = \eta`."""

    lr: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive_finite(self.lr, "lr"))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.lr


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExponentialDecay:
    r"""Exponential decay :math:`\eta(s) = \eta_0\,(\eta_1/\eta_0)^{\min(s, S)/S}`.

    The learning rate falls geometrically from ``lr_start`` (step 0) to ``lr_end`` (step
    ``steps`` = S) and stays there; halfway it is the geometric mean
    :math:`\sqrt{\eta_0\eta_1}`. This is the schedule of the GTF reference training
    (1e-3 → 1e-6), evaluated per optimiser update rather than per epoch.
    """

    lr_start: float = 1e-3
    lr_end: float = 1e-6
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_start", _positive_finite(self.lr_start, "lr_start"))
        object.__setattr__(self, "lr_end", _positive_finite(self.lr_end, "lr_end"))
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)):
            raise TypeError(f"steps must be a positive integer, got {self.steps!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        object.__setattr__(self, "steps", int(self.steps))

    def __call__(self, step: int) -> float:
        s = min(_check_step(step), self.steps)
        if s == self.steps:  # exact end value, free of rounding in the power
            return self.lr_end
        return self.lr_start * (self.lr_end / self.lr_start) ** (s / self.steps)


def as_schedule(lr: float | Schedule) -> Schedule:
    """``lr`` as a schedule: a number becomes :class:`Constant`, a callable is returned as is."""
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        return Constant(float(lr))
    if callable(lr):
        return lr
    raise TypeError(
        f"lr must be a positive number or a schedule callable lr(step) -> float, "
        f"got {type(lr).__name__} {lr!r}"
    )


# -- gradients --------------------------------------------------------------------------------
def _check_structure(params: Params, other: Mapping[str, Any], name: str) -> Params:
    """``other`` as ``Params`` with the names and shapes of ``params`` (in their order)."""
    if not isinstance(other, Mapping):
        raise TypeError(f"{name} must be a mapping name -> array (Params), got {type(other)}")
    missing = [k for k in params if k not in other]
    extra = [k for k in other if k not in params]
    if missing or extra:
        raise ValueError(
            f"{name} must have the parameter names {list(params)}; "
            f"missing {missing}, unexpected {extra}"
        )
    out = Params({k: other[k] for k in params})
    for k, p in params.items():
        if tuple(out[k].shape) != tuple(p.shape):
            raise ValueError(f"{name}[{k!r}] must have shape {tuple(p.shape)}, got {out[k].shape}")
    return out


def _nonfinite_error(grads: Params, name: str) -> FloatingPointError:
    xp = array_namespace(*grads.values())
    for k, g in grads.items():
        bad = ~xp.isfinite(g)
        if bool(bad.any()):
            index = tuple(int(i[0]) for i in xp.nonzero(bad))
            value = float(g[index]) if index else float(g)
            kind = "NaN" if math.isnan(value) else "Inf"
            return FloatingPointError(
                f"{name} of parameter {k!r} is not finite ({kind} at index {index}, "
                f"{int(bad.sum())} of {g.size} entries); the loss or its gradient overflowed: "
                "lower the learning rate, set clip_norm, or use stronger forcing (larger alpha)"
            )
    return FloatingPointError(f"{name} is not finite")  # pragma: no cover - defensive


def _norm_parts(grads: Params, name: str) -> tuple[float, float]:
    """(scale, sum of squares of grads/scale), raising ``FloatingPointError`` on NaN/Inf.

    Scaling by the largest magnitude keeps the sum of squares from overflowing; the norm is
    ``scale * sqrt(sumsq)``. Two host transfers in all, whatever the number of arrays.
    """
    arrays = list(grads.values())
    if not arrays:
        return 0.0, 0.0
    xp = array_namespace(*arrays)
    amax = to_numpy(
        xp.stack([xp.max(xp.abs(g)) if g.size else xp.zeros((), g.dtype) for g in arrays])
    )
    if not np.all(np.isfinite(amax)):  # max propagates NaN, and Inf is its own maximum
        raise _nonfinite_error(grads, name)
    scale = float(amax.max())
    if scale == 0.0:
        return 0.0, 0.0
    sumsq = float(to_numpy(xp.stack([xp.sum((g / scale) ** 2) for g in arrays])).sum())
    return scale, sumsq


def global_norm(grads: Params) -> float:
    r"""The global Euclidean norm :math:`\|g\| = \big(\sum_k \|g_k\|_F^2\big)^{1/2}`.

    Computed with scaling so that it does not overflow before the norm itself does.

    Raises
    ------
    FloatingPointError
        If an array holds NaN or Inf (the message names the parameter).
    """
    scale, sumsq = _norm_parts(grads, "gradient")
    return scale * math.sqrt(sumsq)


def _clip(grads: Params, max_norm: float, name: str) -> tuple[Params, float]:
    scale, sumsq = _norm_parts(grads, name)
    norm = scale * math.sqrt(sumsq)
    if norm <= max_norm:
        return grads, norm
    factor = (max_norm / scale) / math.sqrt(sumsq)  # = max_norm / norm, overflow-free
    return grads.map(lambda g: g * factor), norm


def clip_by_global_norm(grads: Params, max_norm: float) -> tuple[Params, float]:
    r"""Rescale gradients to global norm at most ``max_norm``: :math:`g \min(1, c/\|g\|)`.

    Parameters
    ----------
    grads
        The gradients.
    max_norm
        The largest allowed global norm :math:`c > 0`.

    Returns
    -------
    clipped, norm
        The (possibly rescaled) gradients and the global norm *before* clipping. Gradients
        within the bound are returned unchanged (the same arrays).

    Raises
    ------
    FloatingPointError
        If a gradient holds NaN or Inf; the message names the parameter.
    """
    max_norm = _positive_finite(max_norm, "max_norm")
    if not isinstance(grads, Params):
        grads = Params(grads)
    return _clip(grads, max_norm, "gradient")


# -- optimiser state --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OptimizerState:
    r"""The state of Adam/RAdam between updates.

    Attributes
    ----------
    step
        Number of updates taken, t (the next update is number t + 1 and uses ``lr(t)``).
    m, v
        First and second moment estimates :math:`m_t, v_t`, structured like the parameters.
    grad_norm
        Global norm of the raw gradient in the last update (NaN before the first).
    """

    step: int
    m: Params
    v: Params
    grad_norm: float = math.nan

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """A flat dict of NumPy arrays for a checkpoint.

        Keys are ``prefix + "step"``, ``prefix + "grad_norm"`` (0-d int64 / float64 arrays) and
        ``prefix + "m/<name>"``, ``prefix + "v/<name>"`` for every parameter.
        """
        out = {
            f"{prefix}step": np.asarray(self.step, dtype=np.int64),
            f"{prefix}grad_norm": np.asarray(self.grad_norm, dtype=np.float64),
        }
        for which, moments in (("m", self.m), ("v", self.v)):
            for k, a in moments.items():
                out[f"{prefix}{which}/{k}"] = to_numpy(a)
        return out

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, Any], template: Params, prefix: str = ""
    ) -> OptimizerState:
        """The state saved by :meth:`to_arrays`, on the array type and dtype of ``template``.

        Parameters
        ----------
        arrays
            The dict (extra keys are ignored, so a whole checkpoint may be passed).
        template
            Parameters whose names, shapes, dtype and array type (NumPy/CuPy) the moments take.
        prefix
            The prefix given to :meth:`to_arrays`.

        Raises
        ------
        ValueError
            If a key is missing or an array has the wrong shape.
        """
        xp = array_namespace(*template.values())

        def get(key: str) -> Any:
            if prefix + key not in arrays:
                raise ValueError(f"optimizer state has no entry {prefix + key!r}")
            return arrays[prefix + key]

        step = np.asarray(get("step"))
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"optimizer state {prefix}step must be an integer ≥ 0, got {step!r}")
        grad_norm = float(np.asarray(arrays.get(prefix + "grad_norm", math.nan)))
        moments = {}
        for which in ("m", "v"):
            out = {}
            for k, p in template.items():
                a = np.asarray(to_numpy(get(f"{which}/{k}")))
                if a.shape != tuple(p.shape):
                    raise ValueError(
                        f"optimizer state {prefix}{which}/{k} has shape {a.shape}, "
                        f"expected {tuple(p.shape)}"
                    )
                out[k] = xp.asarray(a, dtype=p.dtype)
            moments[which] = Params(out)
        return cls(step=int(step), m=moments["m"], v=moments["v"], grad_norm=grad_norm)


# -- optimisers -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Optimizer:
    r"""Base of the Adam family: options shared by every optimiser.

    One update with raw gradient :math:`g` does, in order:

    1. stop with ``FloatingPointError`` if :math:`g` holds NaN/Inf (naming the parameter);
    2. clip: :math:`g \leftarrow g\min(1, c/\|g\|)` if ``clip_norm`` = c is set;
    3. L2 weight decay (as in ``torch.optim``): :math:`g \leftarrow g + \lambda\theta`, or,
       with ``decoupled_weight_decay`` (AdamW), :math:`\theta \leftarrow \theta - \eta_t
       \lambda\theta` beside the step;
    4. the method's step with learning rate :math:`\eta_t` = ``lr(t)``, t the number of
       updates already taken.

    Attributes
    ----------
    lr
        A positive number or a schedule ``lr(step) -> float`` (:class:`ExponentialDecay`).
    clip_norm
        Largest global gradient norm, or None for no clipping.
    weight_decay
        λ ≥ 0.
    decoupled_weight_decay
        Decay the parameters directly (AdamW) instead of adding λθ to the gradient.
    """

    lr: float | Schedule = 1e-3
    clip_norm: float | None = None
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Optimizer:
        valid = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise TypeError(f"{cls.__name__} got unknown option(s) {unknown}; valid: {valid}")
        if args:
            raise TypeError(f"{cls.__name__} takes keyword arguments only ({valid})")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if isinstance(self.lr, numbers.Real) and not isinstance(self.lr, bool):
            object.__setattr__(self, "lr", _positive_finite(self.lr, "lr"))
        else:
            as_schedule(self.lr)  # raises for anything that is not a schedule
            if isinstance(self.lr, np.ndarray) or hasattr(self.lr, "__array_namespace__"):
                raise TypeError("lr must be a number or a schedule, not an array")
        if self.clip_norm is not None:
            object.__setattr__(self, "clip_norm", _positive_finite(self.clip_norm, "clip_norm"))
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not 0 <= wd < math.inf:
            raise ValueError(f"weight_decay must be a finite number ≥ 0, got {wd!r}")
        object.__setattr__(self, "weight_decay", float(wd))

    def learning_rate(self, step: int) -> float:
        """The learning rate of the update taken after ``step`` updates."""
        lr = float(as_schedule(self.lr)(step))
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"the learning-rate schedule gave {lr!r} at step {step}")
        return lr

    def init(self, params: Params) -> OptimizerState:
        r"""The state before the first update: :math:`t = 0`, :math:`m_0 = v_0 = 0`."""
        if not isinstance(params, Params):
            params = Params(params)
        xp = array_namespace(*params.values())
        zeros = params.map(lambda p: xp.zeros_like(p))
        return OptimizerState(step=0, m=zeros, v=params.map(lambda p: xp.zeros_like(p)))

    def update(
        self, params: Params, grads: Mapping[str, Any], state: OptimizerState
    ) -> tuple[Params, OptimizerState]:
        r"""One step :math:`\theta_t = \theta_{t-1} - \eta_t d_t` (d_t the method's direction).

        Parameters
        ----------
        params
            The parameters :math:`\theta_{t-1}`.
        grads
            :math:`\nabla L(\theta_{t-1})`, a mapping with the names and shapes of ``params``
            (cast to the parameters' dtype).
        state
            The state from :meth:`init` or the previous update.

        Returns
        -------
        new_params, new_state
            :math:`\theta_t` and the state after update t; the inputs are left untouched.

        Raises
        ------
        FloatingPointError
            If a gradient holds NaN or Inf (the message names the parameter).
        ValueError
            If ``grads`` or ``state`` do not match the structure of ``params``.
        """
        if not isinstance(params, Params):
            params = Params(params)
        if not isinstance(state, OptimizerState):
            raise TypeError(f"state must be an OptimizerState (from init), got {type(state)}")
        grads = _check_structure(params, grads, "grads")
        _check_structure(params, state.m, "state.m")
        _check_structure(params, state.v, "state.v")
        grads = grads.map(lambda g, p: g.astype(p.dtype, copy=False), params)
        if self.clip_norm is not None:
            grads, norm = _clip(grads, self.clip_norm, "gradient")
        else:
            norm = global_norm(grads)
        lr = self.learning_rate(state.step)
        wd = self.weight_decay
        if wd and not self.decoupled_weight_decay:
            grads = grads.map(lambda g, p: g + wd * p, params)
        t = state.step + 1
        new, m, v = self._step(params, grads, state.m, state.v, t, lr)
        if wd and self.decoupled_weight_decay:
            new = new.map(lambda q, p: q - (lr * wd) * p, params)
        return new, OptimizerState(step=t, m=m, v=v, grad_norm=norm)

    def _step(
        self, params: Params, grads: Params, m: Params, v: Params, t: int, lr: float
    ) -> tuple[Params, Params, Params]:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_betas(betas: Any, eps: Any) -> tuple[float, float]:
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair of numbers, got {betas!r}") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite number ≥ 0, got {eps!r}")
    return b1, b2


def _moments(grads: Params, m: Params, v: Params, b1: float, b2: float) -> tuple[Params, Params]:
    m = m.map(lambda mk, g: b1 * mk + (1 - b1) * g, grads)
    v = v.map(lambda vk, g: b2 * vk + (1 - b2) * (g * g), grads)
    return m, v


@dataclasses.dataclass(frozen=True, kw_only=True)
class Adam(Optimizer):
    r"""Adam: :math:`\theta_t = \theta_{t-1} - \eta_t\,\hat m_t/(\sqrt{\hat v_t}+\epsilon)`.

    With :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1)g_t`, :math:`v_t = \beta_2 v_{t-1} +
    (1-\beta_2)g_t^2`, :math:`\hat m_t = m_t/(1-\beta_1^t)`, :math:`\hat v_t = v_t/(1-\beta_2^t)`
    (Kingma & Ba 2015). See :class:`Optimizer` for clipping, weight decay and the schedule.
    """

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "betas", _check_betas(self.betas, self.eps))
        object.__setattr__(self, "eps", float(self.eps))

    def _step(
        self, params: Params, grads: Params, m: Params, v: Params, t: int, lr: float
    ) -> tuple[Params, Params, Params]:
        b1, b2 = self.betas
        m, v = _moments(grads, m, v, b1, b2)
        xp = array_namespace(*params.values())
        c1, c2 = 1 - b1**t, 1 - b2**t
        eps = self.eps
        new = params.map(lambda p, mk, vk: p - lr * (mk / c1) / (xp.sqrt(vk / c2) + eps), m, v)
        return new, m, v


@dataclasses.dataclass(frozen=True, kw_only=True)
class RAdam(Optimizer):
    r"""Rectified Adam (Liu et al., ICLR 2020).

    With the Adam moments and :math:`\rho_\infty = 2/(1-\beta_2) - 1`,
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)` (the length of the approximated
    simple moving average):

    .. math::

        \theta_t = \begin{cases}
            \theta_{t-1} - \eta_t\, r_t\, \hat m_t/(\sqrt{\hat v_t}+\epsilon), &
            \rho_t > \rho_{\min}, \quad r_t = \sqrt{\dfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}
            {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}, \\
            \theta_{t-1} - \eta_t\, \hat m_t, & \text{otherwise (un-adapted momentum).}
        \end{cases}

    The threshold :math:`\rho_{\min}` is ``rho_threshold``, default **5**: Algorithm 2 of the
    paper tests :math:`\rho_t > 4` (where :math:`r_t` becomes real), the authors' released
    code and ``torch.optim.RAdam`` (which the GTF reference trains with) use 5, skipping the
    step where :math:`r_t \approx 0` and the variance estimate is least reliable. Pass
    ``rho_threshold=4.0`` for the paper's Algorithm 2. ε is added to :math:`\sqrt{\hat v_t}`
    as in ``torch.optim``; the paper has none.
    """

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    rho_threshold: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "betas", _check_betas(self.betas, self.eps))
        object.__setattr__(self, "eps", float(self.eps))
        thr = self.rho_threshold
        if isinstance(thr, bool) or not isinstance(thr, numbers.Real) or not 4 <= thr < math.inf:
            raise ValueError(f"rho_threshold must be a finite number ≥ 4, got {thr!r}")
        object.__setattr__(self, "rho_threshold", float(thr))

    def rectification(self, t: int) -> float | None:
        r"""The factor :math:`r_t` of update t ≥ 1, or None where :math:`\rho_t` is too small."""
        b2 = self.betas[1]
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if not rho_t > self.rho_threshold:
            return None
        return math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )

    def _step(
        self, params: Params, grads: Params, m: Params, v: Params, t: int, lr: float
    ) -> tuple[Params, Params, Params]:
        b1, b2 = self.betas
        m, v = _moments(grads, m, v, b1, b2)
        xp = array_namespace(*params.values())
        c1, c2 = 1 - b1**t, 1 - b2**t
        r = self.rectification(t)
        if r is None:
            new = params.map(lambda p, mk: p - lr * (mk / c1), m)
        else:
            eps = self.eps
            new = params.map(
                lambda p, mk, vk: p - (lr * r) * (mk / c1) / (xp.sqrt(vk / c2) + eps), m, v
            )
        return new, m, v


# -- SciPy adapter ----------------------------------------------------------------------------
class ScipyObjective:
    r"""``fun(params) -> (loss, grads)`` as :math:`x \mapsto (L(x), \nabla L(x))` on flat vectors.

    For :func:`scipy.optimize.minimize` with ``jac=True``:

    .. code-block:: python

        obj = ScipyObjective(fun, model.params)
        res = scipy.optimize.minimize(obj, obj.x0, jac=True, method="L-BFGS-B")
        params = obj.params(res.x)

    The vector is :meth:`Params.flatten` of the parameters in float64 on the host; ``fun``
    receives ``Params`` in the template's dtype and array type (NumPy or CuPy).

    Attributes
    ----------
    n_evals
        Number of evaluations of ``fun`` so far.
    best_loss, best_x
        The lowest finite loss seen and its vector (a copy), for recovery after a failed run.
    """

    def __init__(self, fun: Callable[[Params], tuple[Any, Mapping[str, Any]]], template: Params):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        if not isinstance(template, Params):
            template = Params(template)
        self.fun = fun
        self.template = template
        self._xp = array_namespace(*template.values())
        self.n_evals = 0
        self.best_loss = math.inf
        self.best_x: np.ndarray | None = None

    @property
    def x0(self) -> np.ndarray:
        """The template's parameters as a float64 NumPy vector."""
        return np.asarray(to_numpy(self.template.flatten()), dtype=np.float64)

    def params(self, x: Any) -> Params:
        """``Params`` (template structure, dtype and array type) from a vector."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.template.size,):
            raise ValueError(f"x must have shape ({self.template.size},), got {x.shape}")
        return self.template.unflatten(self._xp.asarray(x, dtype=self.template.dtype))

    def __call__(self, x: Any) -> tuple[float, np.ndarray]:
        """(loss, gradient) at ``x``, both float64 on the host."""
        params = self.params(x)
        loss, grads = self.fun(params)
        self.n_evals += 1
        grads = _check_structure(params, grads, "grads returned by fun")
        loss = float(to_numpy(loss))
        g = np.asarray(to_numpy(grads.flatten()), dtype=np.float64)
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_loss = loss
            self.best_x = np.array(x, dtype=np.float64)
        return loss, g

r"""The Adam family on :class:`~pitsolve.models.base.Params`: the :class:`Optimizer` base
(clipping, weight decay, schedule), :class:`Adam`, :class:`RAdam` and their
:class:`OptimizerState`. The mathematics is in the docstring of :mod:`pitsolve.training.optim`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...backends import array_namespace, to_numpy
from ...models.base import Params
from ._checks import positive_finite
from .gradients import _check_structure, _clip, global_norm
from .schedules import Schedule, as_schedule

__all__ = ["Adam", "Optimizer", "OptimizerState", "RAdam"]


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
            object.__setattr__(self, "lr", positive_finite(self.lr, "lr"))
        else:
            as_schedule(self.lr)  # raises for anything that is not a schedule
            if isinstance(self.lr, np.ndarray) or hasattr(self.lr, "__array_namespace__"):
                raise TypeError("lr must be a number or a schedule, not an array")
        if self.clip_norm is not None:
            object.__setattr__(self, "clip_norm", positive_finite(self.clip_norm, "clip_norm"))
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

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

from .gradients import clip_by_global_norm, global_norm
from .optimizers import Adam, Optimizer, OptimizerState, RAdam
from .schedules import Constant, ExponentialDecay, Schedule, as_schedule
from .scipy_adapter import ScipyObjective

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

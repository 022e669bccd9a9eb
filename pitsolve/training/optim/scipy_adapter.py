r"""SciPy adapter: ``fun(params) -> (loss, grads)`` as a function of a flat float64 vector, for
:func:`scipy.optimize.minimize` (full-batch training with L-BFGS-B)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...backends import array_namespace, to_numpy
from ...models.base import Params
from .gradients import _check_structure

__all__ = ["ScipyObjective"]


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

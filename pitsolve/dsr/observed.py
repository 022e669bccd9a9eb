r"""A model with an affine observation, seen as a model of the observations, so that the DSR
protocol (:func:`~pitsolve.dsr.evaluate.evaluate`, :func:`~pitsolve.dsr.evaluate.generate`,
``prediction_error``, ``max_lyapunov``) measures it as it measures any model.

The protocol starts a model from a test point :math:`x_0 \in \mathbb R^N` as the latent state
:math:`[x_0; 0]` and reads the observations from the first N latent units: the identity
observation. A model trained through an affine observation :math:`\hat x = Bz + b`
(:class:`~pitsolve.models.ObservedModel` with :class:`~pitsolve.models.Affine`, for example
with fewer latent units M than data dimensions N) starts instead from the forcing signal
:math:`\hat z = P(x_0 - b)`, :math:`P = B^+`, and is observed through B. The view
:class:`AffineObservationView` has the state :math:`s = [x; z] \in \mathbb R^{N+M}` and the map

.. math::

    \hat z(s) = z + P\,(x - Bz - b),\qquad
    F(s) = \bigl[B\,f(\hat z(s)) + b;\ f(\hat z(s))\bigr].

From :math:`s_0 = [x_0; 0]`, :math:`\hat z(s_0) = P(x_0 - b)` is the forcing signal; after
one step :math:`x = Bz + b`, so :math:`\hat z(s) = z` and the latent model runs unchanged, its
observations in the first N units. The Jacobian
:math:`\partial F/\partial s = \begin{bmatrix}B\\ I\end{bmatrix} J(\hat z)
\begin{bmatrix}P & I - PB\end{bmatrix}` gives products
:math:`\begin{bmatrix}B\\ I\end{bmatrix} J_T \cdots J_1 \begin{bmatrix}P & I - PB\end{bmatrix}`
along a trajectory (as :math:`[P,\ I-PB]\,[B;\ I] = I`): the view's Lyapunov exponents are
the latent model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models import Affine, Identity, ObservedModel

__all__ = ["AffineObservationView", "observation_view"]


class AffineObservationView:
    """The model ``F`` on ``[x; z]`` above, for an ObservedModel with an Affine observation.

    It provides what the evaluation protocol calls: ``f``, ``jacobian`` (dense),
    ``sequential``, ``state_dim`` (N + M), ``input_dim`` (0) and ``dtype``; ``observed`` is N.
    """

    jacobian_structure = "dense"
    input_dim = 0

    def __init__(self, model: ObservedModel):
        if not isinstance(model, ObservedModel) or not isinstance(model.observation, Affine):
            raise TypeError("AffineObservationView needs an ObservedModel with an Affine "
                            f"observation, got {model!r}")
        if model.input_dim:
            raise ValueError(f"the model must be autonomous, got input_dim={model.input_dim}")
        self.model = model
        self.latent = model.latent
        B = np.asarray(model.observation.params["B"])
        self.B, self.b = B, np.asarray(model.observation.params["b"])
        self.P = np.asarray(model.observation.pinv())
        self.observed, M = B.shape
        self.state_dim = self.observed + M
        self.dtype = np.dtype(model.dtype)

    def __repr__(self) -> str:
        return f"AffineObservationView({self.model!r})"

    def _latent_start(self, s: Any) -> np.ndarray:
        r""":math:`\hat z(s) = z + P(x - Bz - b)`."""
        s = np.asarray(s)
        x, z = s[..., : self.observed], s[..., self.observed :]
        return z + (x - z @ self.B.T - self.b) @ self.P.T

    def _stack(self, z: np.ndarray) -> np.ndarray:
        return np.concatenate([z @ self.B.T + self.b, z], axis=-1)

    def f(self, h: Any, x: Any = None) -> np.ndarray:
        """``F(s)``, batched over leading axes."""
        return self._stack(np.asarray(self.latent.f(self._latent_start(h))))

    def jacobian(self, h: Any, x: Any = None) -> np.ndarray:
        """``∂F/∂s = [B; I] J(ẑ) [P, I - PB]``, ``(..., N+M, N+M)``."""
        J = np.asarray(self.latent.jacobian(self._latent_start(h)))
        if getattr(self.latent, "jacobian_structure", "dense") == "diagonal":
            J = J[..., :, None] * np.eye(J.shape[-1], dtype=J.dtype)
        M = J.shape[-1]
        right = np.concatenate([self.P, np.eye(M, dtype=self.P.dtype) - self.P @ self.B], axis=1)
        left = np.concatenate([self.B, np.eye(M, dtype=self.B.dtype)], axis=0)
        return left @ J @ right

    def sequential(self, h0: Any, inputs: Any, T: int) -> np.ndarray:
        """The trajectory ``(..., T, N+M)`` from ``h0``: the latent model's own (compiled)
        loop from ``ẑ(h0)``, observed through B."""
        h0 = np.asarray(h0)
        z0 = self._latent_start(h0).astype(h0.dtype)
        return self._stack(np.asarray(self.latent.sequential(z0, inputs, int(T))))


def observation_view(model: Any) -> Any:
    """``model`` as the evaluation protocol should see it: an
    :class:`AffineObservationView` of an ObservedModel with an Affine observation, the
    latent model of one with the Identity observation, any other model itself."""
    if isinstance(model, ObservedModel):
        if isinstance(model.observation, Identity):
            return model.latent
        return AffineObservationView(model)
    return model

"""What the PLRNN family shares: initialisation, parameter checks, the Jacobian's diagonal,
the regularisation target and the one-pass loops of the forced predictions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..._arrays import array_namespace
from ..base import Model, Params

__all__ = ["PLRNNFamily"]


def _diag_scaled_init(rng: np.random.Generator, M: int) -> np.ndarray:
    r""":math:`a = \operatorname{diag}(K) / \lambda_{\max}(K)`, :math:`K = R^\top R / M + I`."""
    R = rng.normal(0.0, 1.0, (M, M))
    K = R.T @ R / M + np.eye(M)
    return np.diag(K) / np.linalg.eigvalsh(K)[-1]


def _check_params(
    params: Mapping[str, Any], shapes: dict[str, tuple[int, ...]], cls: str, dtype: Any
) -> Params:
    """``params`` as :class:`Params` in the canonical order, names and shapes checked."""
    if set(params) != set(shapes):
        raise ValueError(f"{cls} params must have the names {list(shapes)}, got {list(params)}")
    p = Params({k: params[k] for k in shapes})
    for k, shape in shapes.items():
        if tuple(p[k].shape) != shape:
            raise ValueError(f"{cls} params[{k!r}] must have shape {shape}, got {p[k].shape}")
    # one dtype for all arrays (the kernels need it): the given one, else the common one
    return p.astype(p.dtype if dtype is None else dtype)


def _add_diagonal(J_flat: Any, a: Any, M: int) -> Any:
    """``J_flat (..., M*M) += vec(diag(a))`` in place; returns ``J_flat`` as ``(..., M, M)``."""
    J_flat[..., :: M + 1] += a
    return J_flat.reshape(*J_flat.shape[:-1], M, M)


class PLRNNFamily(Model):
    r"""Base of the shPLRNNs and the ALRNN: the latent dimension, the regularisation target
    :math:`a^\star = 1` (the GTF reference's), and the compiled one-pass loops behind
    :class:`~pitsolve.models.ForcedPredictionModel`: the forced recurrence
    :math:`\tilde z_t = (1 - a_t) \odot F(\tilde z_{t-1}) + a_t \odot \hat z_t` with the loss
    on the predictions :math:`z_t = F(\tilde z_{t-1})`. Flat, C-contiguous NumPy arrays in one
    dtype; the caller validates. Subclasses provide ``_sequential`` and ``_bptt``."""

    @property
    def latent_dim(self) -> int:
        """M, the latent (state) dimension."""
        return self.state_dim

    def _cuda_params(self, z: Any) -> dict[str, Any] | None:
        """The parameters as contiguous device arrays for the CUDA kernels (``_cuda``), if
        they serve ``z``: a backend with CUDA kernels, ``z`` in the parameters' dtype and
        M ≤ ``_cuda.MAX_STATE``; else None."""
        if not (self._backend_for(z).cuda and z.dtype == self.dtype and z.ndim >= 1):
            return None
        from ._cuda import MAX_STATE

        if self.state_dim > MAX_STATE:
            return None
        xp = array_namespace(z)
        return self.cached("cuda", lambda: {k: xp.ascontiguousarray(v)
                                            for k, v in self.params.items()})

    def regularization_target(self) -> Params:
        r""":math:`a^\star = 1`, every other parameter 0."""

        def target(name: str, v: Any) -> Any:
            xp = array_namespace(v)
            return xp.ones_like(v) if name == "a" else xp.zeros_like(v)

        return Params({k: target(k, v) for k, v in self.params.items()})

    def _loop_predictions(self, H0: np.ndarray, Z: np.ndarray, A: np.ndarray) -> Any:
        """The predictions ``(B, T, M)`` of the forced loop from :math:`\tilde z_0` = ``H0``
        ``(B, M)``, forced by ``Z``, ``A`` ``(B, T, M)``."""
        return self._sequential(H0, Z.shape[1], Z, A, predictions=True)  # type: ignore[attr-defined]

    def _loop_bptt_predictions(
        self, H0: np.ndarray, S: np.ndarray, G: np.ndarray, A: np.ndarray
    ) -> tuple[Params, np.ndarray, np.ndarray]:
        r"""BPTT with ``G`` the cotangents of the predictions and ``S`` the forced states:
        :math:`\lambda_t = J(\tilde z_t)^\top \mu_{t+1}` (:math:`\lambda_T = 0`),
        :math:`\mu_t = g_t + (1 - a_t) \odot \lambda_t`,
        :math:`\bar\theta = \sum_t (\partial F/\partial\theta)(\tilde z_{t-1})^\top \mu_t`.
        Returns ``(params_bar, h0_bar, lam)``, ``h0_bar`` :math:`= J(\tilde z_0)^\top \mu_1`
        and ``lam`` ``(B, T, M)`` the :math:`\lambda_t`."""
        lam = np.empty_like(S)
        pb, h0_bar, _, _ = self._bptt(H0, S, G, None, A, lam)  # type: ignore[attr-defined]
        return pb, h0_bar, lam

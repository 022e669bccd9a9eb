r"""The standard benchmark problems of pitsolve (``BENCHMARKS.md``), built exactly by recipe.

Each function returns a :class:`BenchmarkProblem`, a 3-tuple ``(model, h0, inputs)`` (``inputs``
is None for autonomous models) that also carries ``T``, ``name`` and a :meth:`problem` method
building the :class:`~pitsolve.RecurrenceProblem`. Arrays are drawn from
``numpy.random.default_rng(seed)`` in the order listed, always in float64, and cast to ``dtype``
afterwards, so both precisions see the same numbers.

=========================  ================================================================
``shplrnn_3x50``           shPLRNN, M = 3, L = 50; contracting
``chaotic_clipped_3x50``   clipped shPLRNN, M = 3, L = 50; bounded chaos
``gru_64``                 GRU, D = 64, 8 inputs; driven, contracting
``elman_256``              Elman, D = 256, 8 inputs; driven, spectral radius ≈ 0.9
``elman_memory``           Elman, D = 4, W = ρ·orthogonal; nearly linear, long memory
=========================  ================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_positive_int

__all__ = [
    "BenchmarkProblem",
    "chaotic_clipped_3x50",
    "elman_256",
    "elman_memory",
    "gru_64",
    "shplrnn_3x50",
]


class BenchmarkProblem(tuple):
    """``(model, h0, inputs)`` plus the number of steps ``T`` and the problem's ``name``."""

    T: int
    name: str

    def __new__(cls, model: Any, h0: Any, inputs: Any, *, T: int, name: str) -> BenchmarkProblem:
        self = super().__new__(cls, (model, h0, inputs))
        self.T = T
        self.name = name
        return self

    @property
    def model(self) -> Any:
        return self[0]

    @property
    def h0(self) -> Any:
        return self[1]

    @property
    def inputs(self) -> Any:
        return self[2]

    def problem(self) -> Any:
        """The :class:`~pitsolve.RecurrenceProblem` of ``T`` steps."""
        from ..problems import RecurrenceProblem

        return RecurrenceProblem(self.model, self.h0, self.inputs, T=self.T)

    def __repr__(self) -> str:
        return f"BenchmarkProblem({self.name}, {self.model!r}, T={self.T})"


def _dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _plrnn(cls_name: str, T: int, dtype: Any, w1_scale: float, clipped: bool) -> BenchmarkProblem:
    from ..models.plrnn import ClippedShPLRNN, ShPLRNN

    T = check_positive_int(T, "T")
    dt = _dtype(dtype)
    M, L = 3, 50
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 0.9, M)
    W1 = rng.normal(0.0, w1_scale / np.sqrt(L), (M, L))
    W2 = rng.normal(0.0, 1.0 / np.sqrt(M), (L, M))
    h1 = rng.normal(0.0, 0.1, M)
    h2 = rng.uniform(-1.0, 1.0, L) if clipped else rng.normal(0.0, 0.1, L)
    h0 = rng.normal(0.0, 1.0, M)
    cls = ClippedShPLRNN if clipped else ShPLRNN
    model = cls.from_params({"a": a, "W1": W1, "W2": W2, "h1": h1, "h2": h2}, dtype=dt)
    return BenchmarkProblem(model, h0.astype(dt), None, T=T, name=cls_name)


def shplrnn_3x50(T: int = 10_000, dtype: Any = np.float64) -> BenchmarkProblem:
    r"""Contracting shPLRNN, M = 3, L = 50 (λ_max ≈ −0.37 per step, ‖J_t‖₂ ≈ 0.8).

    Seed 0, drawn in order: :math:`a \sim U(0.5, 0.9)^M`,
    :math:`W_1 \sim N(0, (0.3/\sqrt L)^2)^{M\times L}`, :math:`W_2 \sim N(0, 1/M)^{L\times M}`,
    :math:`h_1 \sim N(0, 0.1^2)^M`, :math:`h_2 \sim N(0, 0.1^2)^L`, :math:`h_0 \sim N(0, 1)^M`.
    Autonomous: ``inputs`` is None.
    """
    return _plrnn("shplrnn_3x50", T, dtype, 0.3, clipped=False)


def chaotic_clipped_3x50(T: int = 10_000, dtype: Any = np.float64) -> BenchmarkProblem:
    r"""Chaotic clipped shPLRNN, M = 3, L = 50 (bounded chaos; plain DEER must fail cleanly).

    Seed 0, drawn in order: :math:`a \sim U(0.5, 0.9)^M`,
    :math:`W_1 \sim N(0, (20/\sqrt L)^2)^{M\times L}`, :math:`W_2 \sim N(0, 1/M)^{L\times M}`,
    :math:`h_1 \sim N(0, 0.1^2)^M`, :math:`h_2 \sim U(-1, 1)^L`, :math:`h_0 \sim N(0, 1)^M`.
    Autonomous: ``inputs`` is None.
    """
    return _plrnn("chaotic_clipped_3x50", T, dtype, 20.0, clipped=True)


def _driving_inputs(T: int, n: int, dt: np.dtype) -> np.ndarray:
    """:math:`x_t \\sim N(0, 1)^{T\\times n}` from seed 1."""
    return np.random.default_rng(1).normal(0.0, 1.0, (T, n)).astype(dt)


def gru_64(T: int = 10_000, dtype: Any = np.float64) -> BenchmarkProblem:
    r"""Driven GRU, D = 64, 8 inputs: default initialisation (seed 0), :math:`h_0 = 0`,
    inputs :math:`x_t \sim N(0, 1)^{T\times 8}` (seed 1)."""
    from ..models import GRU

    T = check_positive_int(T, "T")
    dt = _dtype(dtype)
    D, N = 64, 8
    model = GRU(D, inputs=N, seed=0).astype(dt)
    return BenchmarkProblem(
        model, np.zeros(D, dtype=dt), _driving_inputs(T, N, dt), T=T, name="gru_64"
    )


def elman_256(T: int = 10_000, dtype: Any = np.float64) -> BenchmarkProblem:
    r"""Driven Elman network :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`, D = 256, 8 inputs.

    Seed 0, drawn in order: :math:`W \sim N(0, 0.9^2/D)^{D\times D}` (spectral radius ≈ 0.9),
    :math:`U \sim N(0, 1/8)^{D\times 8}`; :math:`b = 0`, :math:`h_0 = 0`; inputs
    :math:`x_t \sim N(0, 1)^{T\times 8}` (seed 1).
    """
    from ..models import Elman
    from ..models.base import Params

    T = check_positive_int(T, "T")
    dt = _dtype(dtype)
    D, N = 256, 8
    rng = np.random.default_rng(0)
    W = rng.normal(0.0, 0.9 / np.sqrt(D), (D, D))
    U = rng.normal(0.0, np.sqrt(1.0 / N), (D, N))
    params = Params(W=W, U=U, b=np.zeros(D)).astype(dt)
    model = Elman(D, inputs=N, seed=0, params=params)
    return BenchmarkProblem(
        model, np.zeros(D, dtype=dt), _driving_inputs(T, N, dt), T=T, name="elman_256"
    )


def elman_memory(T: int = 4000, rho: float = 0.8, dtype: Any = np.float64) -> BenchmarkProblem:
    r"""A slowly contracting driven Elman network, D = 4, 1 input: every eigenvalue of W has
    modulus ρ, so an error decays like :math:`\rho^t` (≈ 100 steps to 1e-10 at ρ = 0.8).

    Seed 3, drawn in order: :math:`Q` from the QR factorisation of an :math:`N(0, 1)^{4\times 4}`
    matrix, :math:`W = \rho Q`, :math:`U \sim N(0, 0.3^2)^{4\times 1}`,
    :math:`b \sim N(0, 0.05^2)^4`, :math:`h_0 \sim N(0, 1)^4`, inputs
    :math:`x_t \sim N(0, 1)^{T\times 1}`. Small inputs keep tanh nearly linear. Used for
    windows shorter than the memory (Schwarz sweeps against overlap).
    """
    from ..models import Elman
    from ..models.base import Params

    T = check_positive_int(T, "T")
    if not 0.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (0, 1), got {rho}")
    dt = _dtype(dtype)
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    params = Params(W=rho * Q, U=0.3 * rng.normal(size=(4, 1)), b=0.05 * rng.normal(size=4))
    h0 = rng.normal(size=4)
    x = rng.normal(size=(T, 1))
    model = Elman(4, inputs=1, params=params.astype(dt))
    return BenchmarkProblem(model, h0.astype(dt), x.astype(dt), T=T, name="elman_memory")

"""Plain loops used as references by the tests, and nothing else (never imported by pitsolve)."""

from __future__ import annotations

import numpy as np


def _apply(A_t: np.ndarray, h: np.ndarray, transpose: bool = False) -> np.ndarray:
    if A_t.ndim == 1:
        return A_t * h
    return (A_t.T if transpose else A_t) @ h


def scan_forward(A: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """h_t = A_t h_{t-1} + b_t, one batch element and one step at a time."""
    out = np.empty_like(b)
    for idx in np.ndindex(*b.shape[:-2]):
        h = h0[idx]
        for t in range(b.shape[-2]):
            h = _apply(A[idx][t], h) + b[idx][t]
            out[idx][t] = h
    return out


def scan_reverse(A: np.ndarray, g: np.ndarray) -> np.ndarray:
    """λ_T = g_T, λ_t = g_t + A_{t+1}ᵀ λ_{t+1}, one batch element and one step at a time."""
    out = np.empty_like(g)
    T = g.shape[-2]
    for idx in np.ndindex(*g.shape[:-2]):
        lam = g[idx][T - 1]
        out[idx][T - 1] = lam
        for t in range(T - 2, -1, -1):
            lam = g[idx][t] + _apply(A[idx][t + 1], lam, transpose=True)
            out[idx][t] = lam
    return out


def recurrence(f, h0: np.ndarray, inputs: np.ndarray | None, T: int) -> np.ndarray:
    """h_t = f(h_{t-1}, x_t) stepped in a Python loop (batched over leading axes of h0)."""
    out = np.empty((*h0.shape[:-1], T, h0.shape[-1]), dtype=h0.dtype)
    h = h0
    for t in range(T):
        h = f(h, None if inputs is None else inputs[..., t, :])
        out[..., t, :] = h
    return out

r"""Training with local objectives on overlapping windows in time (MATH.md §7, after D'Amore).

The forced recurrence of the whole series is cut into the windows of a
:class:`~pitsolve.Schwarz` partition. Window p owns its initial state :math:`b_p` (a free
variable, as in multiple shooting; :math:`b_0 = \hat z_0` is fixed) and minimises

.. math::

    J_p = \frac{1}{n}\sum_{t \in \mathrm{own}(p)} \|F(z^{(p)}_{t-1})_{1:N} - x_t\|^2
        + \frac{\mu}{2} \sum_{q = p \pm 1} \sum_{t \in O_{pq}} \|z^{(p)}_t - z^{(q)}_t\|^2,

where :math:`z^{(p)} = (b_p, z^{(p)}_{s_p}, \dots)` is its forced trajectory,
:math:`O_{p,p+1}` the δ + 1 rows the two windows share (the right one's initial state and
its overlap) and :math:`z^{(q)}` the neighbour's trajectory of the same step, exchanged with
that neighbour only; n is the number of observed entries of the whole series, so that
:math:`\sum_p J_p` at μ = 0 and matching windows is the global GTF loss. Gradients are the
hand-derived ones: one adjoint solve of the window's forced recurrence with cotangent

.. math::

    g_t = [\nabla \ell]_t + \mu \sum_q (z^{(p)}_t - z^{(q)}_t),

plus the direct parameter term of the one-step predictions; the adjoint's :math:`\bar h_0`
(plus the initial-state terms of the loss and the overlap) is the gradient of :math:`b_p`.

Shared parameters θ are kept consistent either exactly — ``sync="allreduce"``: the window
gradients are summed (one all-reduce per step) — or without any global collective —
``sync="neighbour"``: window p keeps a copy θ_p, steps it with :math:`P\,\nabla_θ J_p`, and
averages with its neighbours with the Metropolis weights of the path graph (1/3 per neighbour),
a decentralised-gradient consensus whose average follows the summed gradient.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..algorithms.schwarz import Schwarz
from ..backends import array_namespace
from ..models.base import Model, Params
from ..parallel import make_engine
from ..problems import RecurrenceProblem
from ..solution import SolverError, is_successful
from ..solve import solve
from .forcing import ForcedModel, estimate_alpha, forcing_signal
from .losses import forced_problem

__all__ = ["LocalTraining", "fit_local"]

_B = "initial_state"  # the name of a window's free initial state among its variables


@dataclasses.dataclass
class _Window:
    variables: Params  # θ_p (and b_p for p ≥ 1)
    opt_state: Any
    alpha: float
    states: Any = None  # z^(p) on the covered rows (s_p .. e_p - 1)
    loss: float = 0.0
    penalty: float = 0.0
    mismatch: float = 0.0
    iterations: int = 0


class LocalTraining:
    """The windows' variables and one optimiser step of local-objective training.

    Build it, then call :meth:`step` repeatedly; :meth:`model` is the current (averaged)
    model. :func:`~pitsolve.fit` drives it when ``solver=Schwarz(objective="local")``.
    """

    def __init__(self, model: Model, data: Any, forcing: Any, schwarz: Schwarz, optimizer: Any,
                 controls: dict[str, Any], start: str = "trajectory"):
        self.forcing, self.alg, self.optimizer = forcing, schwarz, optimizer
        self.controls = {k: v for k, v in controls.items() if k != "fallback"}
        self.engine = make_engine(schwarz.engine, workers=schwarz.workers, comm=schwarz.comm)
        self.data = data
        self.N, self.M = data.shape[-1], model.state_dim
        alpha = getattr(forcing, "initial_alpha", 0.0)
        glob = forced_problem(model, data, forcing, alpha)
        self.part = schwarz.partition(glob.T)
        self.local = self.engine.local(self.part)
        self.count = (glob.T * self.N) * max(1, math.prod(glob.batch_shape))
        # a consistent start: the windows' initial states on the forced trajectory of θ_0
        start_sol = solve(glob, dataclasses.replace(schwarz, objective="global", gather="all"),
                          **self.controls)
        if not is_successful(start_sol):
            raise SolverError(start_sol)
        self.zhat = forcing_signal(data, self.M)
        if start not in ("trajectory", "data"):
            raise ValueError(f"start must be 'trajectory' or 'data', got {start!r}")
        # initial states: on the forced trajectory (consistent windows) or the data (ẑ)
        init = start_sol.states if start == "trajectory" else self.zhat[..., 1:, :]
        self.windows: dict[int, _Window] = {}
        for p in self.local:
            c = self.part.covered(p)[0]
            variables = model.params if p == 0 else Params(
                {**model.params, _B: init[..., c - 1, :].copy()})
            w = _Window(variables, optimizer.init(variables), alpha)
            w.states = start_sol.states[..., c : self.part.bounds[p + 1], :].copy()
            self.windows[p] = w
        self.model_type = model
        self.steps = 0

    # -- pieces of one step -----------------------------------------------------------------
    @staticmethod
    def _theta(variables: Params) -> Params:
        """The model parameters among a window's variables."""
        return Params({k: v for k, v in variables.items() if k != _B})

    def _weights(self, alpha: float) -> Any:
        """Forcing weights of all rows for ``alpha``, computed once per value (not per step)."""
        cache = self.__dict__.setdefault("_weights_cache", {})
        a = cache.get(alpha)
        if a is None:  # windows on threads may race here; each then computes its own copy
            a = self.forcing.weights(self.part.T, self.M, self.N, alpha)
            if len(cache) > 64:  # aGTF: one α per window and update
                cache.clear()
            cache[alpha] = a
        return a

    def _problem(self, p: int, w: _Window) -> RecurrenceProblem:
        """Window p's forced recurrence: rows [s_p, e_p) from b_p."""
        c, e = self.part.covered(p)
        model = self.model_type.replace(self._theta(w.variables))
        xp = array_namespace(self.data)
        a = self._weights(w.alpha)[c:e]
        a = xp.broadcast_to(xp.asarray(a, dtype=self.data.dtype), (*self.data.shape[:-2], e - c,
                                                                   self.M))
        inputs = xp.concatenate([self.zhat[..., c + 1 : e + 1, :], a], axis=-1)
        h0 = self.zhat[..., 0, :] if p == 0 else w.variables[_B]
        return RecurrenceProblem(ForcedModel(model), h0, inputs=inputs)

    def _forward(self, p: int) -> Any:
        w = self.windows[p]
        if getattr(self.forcing, "adaptive", False) and self.steps % self.forcing.update_every == 0:
            c, e = self.part.covered(p)
            w.alpha = estimate_alpha(self.model_type.replace(self._theta(w.variables)),
                                     self.zhat[..., c:e, :], self.forcing, w.alpha)
        prob = self._problem(p, w)
        sol = solve(prob, self.alg.inner, h_init=w.states, **self.controls)
        if not is_successful(sol):
            raise SolverError(sol)
        w.states = sol.states
        w.iterations = sol.stats.iterations
        return sol

    def objective(self, p: int, variables: Params, left: Any, right: Any) -> float:
        """J_p at ``variables`` with the neighbours' shared rows ``left`` / ``right`` fixed.

        Solves the window's forced recurrence sequentially; for checks and diagnostics.
        """
        from ..algorithms import Sequential

        w = _Window(variables, None, self.windows[p].alpha)
        sol = solve(self._problem(p, w), Sequential())
        w.states = sol.states
        self._terms(p, w, sol.problem, left, right)
        return w.loss + w.penalty

    def _terms(self, p: int, w: _Window, prob: RecurrenceProblem, left: Any,
               right: Any) -> tuple[Any, Any, Any, Any]:
        """Loss and penalty of window p into ``w``; returns (prev, G, d_left, d_right)."""
        c, e = self.part.covered(p)
        own = self.part.bounds[p] - c
        xp = array_namespace(w.states)
        work = prob.working_model().base
        prev = xp.concatenate([prob.h0[..., None, :], w.states[..., :-1, :]], axis=-2)
        pred = work.f(prev[..., own:, :])
        err = pred[..., : self.N] - self.data[..., c + own + 1 : e + 1, :]
        w.loss = float((err * err).sum()) / self.count
        G = xp.zeros_like(pred)
        G[..., : self.N] = (2.0 / self.count) * err
        d_left = d_right = None
        w.mismatch = w.penalty = 0.0
        if left is not None:  # rows [s_p - 1, o_p): b_p and the left overlap
            d_left = xp.concatenate([prob.h0[..., None, :], w.states[..., :own, :]], -2) - left
        if right is not None:  # rows [s_{p+1} - 1, e_p): the right neighbour's b and overlap
            d_right = w.states[..., -right.shape[-2] :, :] - right
        for d in (d_left, d_right):
            if d is not None:
                w.penalty += 0.5 * self.alg.mu * float((d * d).sum())
                w.mismatch = max(w.mismatch, float(xp.abs(d).max()))
        return prev, G, d_left, d_right

    def _gradient(self, p: int, sol: Any, left: Any, right: Any) -> Params:
        """∇ of J_p with respect to window p's variables (θ_p and b_p)."""
        w, mu = self.windows[p], self.alg.mu
        own = self.part.bounds[p] - self.part.covered(p)[0]
        prob = sol.problem
        work = prob.working_model().base
        prev, G, d_left, d_right = self._terms(p, w, prob, left, right)
        xp = array_namespace(w.states)
        g = xp.zeros_like(w.states)
        b_bar = xp.zeros_like(prob.h0)
        # the one-step predictions from the owned rows' previous states
        back = work.vjp_h(prev[..., own:, :], None, G)
        if own == 0:
            b_bar += back[..., 0, :]
            g[..., :-1, :] += back[..., 1:, :]
        else:
            g[..., own - 1 : -1, :] += back
        if d_left is not None:
            b_bar += mu * d_left[..., 0, :]
            g[..., :own, :] += mu * d_left[..., 1:, :]
        if d_right is not None:
            g[..., -d_right.shape[-2] :, :] += mu * d_right
        cot = sol.vjp(g)
        grads = cot.params.map(lambda u, v: u + v, work.vjp_params(prev[..., own:, :], None, G))
        if p > 0:
            grads = Params({**grads, _B: b_bar + cot.h0})
        return grads

    def _messages(self) -> tuple[dict[int, Any], dict[int, Any]]:
        """Each window's neighbours' trajectories on the shared rows (left, right)."""
        part, engine = self.part, self.engine
        to_right, to_left = {}, {}
        for p, w in self.windows.items():
            if p + 1 < part.P:  # rows [s_{p+1} - 1, e_p) of z^(p)
                n = part.bounds[p + 1] - part.covered(p + 1)[0] + 1
                to_right[p] = w.states[..., -n:, :].copy()
            if p > 0:  # (b_p, z^(p) on [s_p, o_p))
                own = part.bounds[p] - part.covered(p)[0]
                xp = array_namespace(w.states)
                to_left[p] = xp.concatenate(
                    [w.variables[_B][..., None, :], w.states[..., :own, :]], axis=-2)
        return engine.shift(to_right, part, 1), engine.shift(to_left, part, -1)

    def step(self) -> float:
        """One optimiser step of every window.

        Returns the global one-step loss (the sum of the windows' own terms) with
        ``sync="allreduce"``, where it travels in the gradients' all-reduce; NaN with
        ``sync="neighbour"``, which has no collective (see :meth:`loss`).
        """
        engine, part = self.engine, self.part
        with engine.guard():
            sols = dict(zip(self.local, engine.map(self._forward, self.local), strict=True))
            left, right = self._messages()
            grads = dict(zip(self.local, engine.map(
                lambda p: self._gradient(p, sols[p], left[p], right[p]), self.local),
                strict=True))
            loss = float("nan")
            if self.alg.sync == "allreduce":
                local = [self._theta(grads[p]).flatten() for p in self.local]
                packed = np.concatenate([sum(local[1:], local[0]), [self._local_loss()]])
                packed = engine.allreduce(packed)
                summed, loss = self._template.unflatten(packed[:-1]), float(packed[-1])
                grads = {p: grads[p].replace(**dict(summed.items())) for p in self.local}
            else:
                grads = {p: grads[p].replace(
                    **{k: part.P * v for k, v in self._theta(grads[p]).items()})
                    for p in self.local}
            for p in self.local:
                w = self.windows[p]
                w.variables, w.opt_state = self.optimizer.update(w.variables, grads[p],
                                                                 w.opt_state)
            if self.alg.sync == "neighbour":
                self._consensus()
        self.steps += 1
        return loss

    def _local_loss(self) -> float:
        return sum(w.loss for w in self.windows.values())

    def loss(self) -> float:
        """The global one-step loss of the last step (a reduction over processes)."""
        with self.engine.guard():
            return float(self.engine.allreduce(self._local_loss()))

    def mismatch(self) -> float:
        """The largest overlap mismatch |z^(p) − z^(q)| of the last step (a reduction)."""
        with self.engine.guard():
            return float(self.engine.allreduce(
                max(w.mismatch for w in self.windows.values()), "max"))

    def _consensus(self) -> None:
        """θ_p ← θ_p + Σ_q w_pq (θ_q − θ_p), Metropolis weights 1/(1 + max(deg_p, deg_q))."""
        part = self.part
        theta = {p: self._theta(w.variables).flatten() for p, w in self.windows.items()}
        from_left = self.engine.shift(theta, part, 1)
        from_right = self.engine.shift(theta, part, -1)

        def degree(q: int) -> int:
            return (q > 0) + (q + 1 < part.P)

        for p, w in self.windows.items():
            new = theta[p].copy()
            for q, other in ((p - 1, from_left[p]), (p + 1, from_right[p])):
                if other is not None:
                    new += (other - theta[p]) / (1 + max(degree(p), degree(q)))
            w.variables = w.variables.replace(**dict(self._template.unflatten(new).items()))

    @property
    def _template(self) -> Params:
        return self._theta(next(iter(self.windows.values())).variables)

    def model(self) -> Model:
        """The model with the windows' parameters (their average with ``sync="neighbour"``)."""
        with self.engine.guard():
            vec = sum(self._theta(w.variables).flatten() for w in self.windows.values())
            vec = self.engine.allreduce(vec) / self.part.P
        return self.model_type.replace(self._template.unflatten(vec))

    def alpha(self) -> float:
        """The windows' mean α."""
        with self.engine.guard():
            return float(self.engine.allreduce(sum(w.alpha for w in self.windows.values()))
                         / self.part.P)

    def iterations(self) -> int:
        """Inner solver iterations of the last step, summed over windows."""
        with self.engine.guard():
            return int(self.engine.allreduce(sum(w.iterations for w in self.windows.values())))


def fit_local(model: Model, data: Any, *, forcing: Any, solver: Schwarz, optimizer: Any,
              epochs: int, steps_per_epoch: int, callbacks: Sequence[Callable[[dict], Any]],
              progress: bool, controls: dict[str, Any],
              validate: Callable[[Model], float] | None, validate_every: int) -> dict[str, Any]:
    """The loop of :func:`~pitsolve.fit` for ``Schwarz(objective="local")`` (whole series)."""
    trainer = LocalTraining(model, data, forcing, solver, optimizer, controls)
    out: dict[str, Any] = {"losses": [], "alphas": [], "stats": [], "validation": [],
                           "best": (math.inf, 0, None), "stopped": None}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        iters = 0
        try:
            for _ in range(steps_per_epoch):
                trainer.step()
                iters += trainer.iterations()
        except (SolverError, FloatingPointError) as exc:
            out["stopped"] = f"local training failed at epoch {epoch + 1}: {exc}"
            break
        current = trainer.model()
        if not all(bool(np.isfinite(np.asarray(v)).all()) for v in current.params.values()):
            out["stopped"] = f"parameters became non-finite at epoch {epoch + 1}"
            break
        out["model"] = current
        out["losses"].append(trainer.loss())
        out["alphas"].append(trainer.alpha())
        stats = {"epoch": epoch + 1, "wall_time": time.perf_counter() - t0,
                 "steps": steps_per_epoch, "solver_iterations": iters,
                 "overlap_mismatch": trainer.mismatch(),
                 "learning_rate": float(optimizer.learning_rate(trainer.steps))}
        out["stats"].append(stats)
        if validate is not None and (epoch + 1) % validate_every == 0:
            score = float(validate(current))
            out["validation"].append((epoch + 1, score))
            stats["validation"] = score
            if score < out["best"][0]:
                out["best"] = (score, epoch + 1, current)
        if progress and trainer.engine.rank == 0:
            print(f"epoch {epoch + 1:5d}/{epochs}  loss {out['losses'][-1]:.4e}  "
                  f"mismatch {stats['overlap_mismatch']:.2e}  {stats['wall_time']:.2f}s",
                  file=sys.stderr)
        info = {"epoch": epoch + 1, "loss": out["losses"][-1], "alpha": out["alphas"][-1],
                "model": current, "stats": stats}
        if any(cb(info) is True for cb in callbacks):
            out["stopped"] = f"stopped by a callback after epoch {epoch + 1}"
            break
    out.setdefault("model", model)
    return out

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

Checkpoints (``fit(..., objective=LocalObjective(), checkpoint=PATH)``) hold every window's
variables, optimiser state, α and last trajectory, gathered into one file on rank 0 with the
MPI engine: ``resume=True`` continues exactly, and the file does not depend on the engine or
the number of ranks. :class:`LocalTraining` is the trainer the epoch loop
(:mod:`pitsolve.training.loop`) drives for :class:`~pitsolve.training.objectives.LocalObjective`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._arrays import array_namespace, to_numpy
from ..algorithms.schwarz import Schwarz, engine_of
from ..models import ForcedModel, Model, Params
from ..models.base import to_namespace
from ..parallel import Engine
from ..problems import RecurrenceProblem
from ..solution import SolverError, is_successful
from ..solve import solve
from .forcing import estimate_alpha, forcing_signal
from .losses import forced_problem
from .objectives import LocalObjective, StepFailed, StepResult
from .optim import OptimizerState

__all__ = ["LocalTraining", "local_objective"]

_B = "initial_state"  # the name of a window's free initial state among its variables


def local_objective(schwarz: Schwarz, objective: LocalObjective | None = None
                    ) -> LocalObjective:
    """``objective``, or the one a deprecated ``Schwarz(objective="local", mu=..., sync=...)``
    spells (default options otherwise)."""
    if objective is not None:
        return objective
    options = {k: getattr(schwarz, k) for k in ("mu", "sync")}
    return LocalObjective(**{k: v for k, v in options.items() if v is not None})


def _solver(schwarz: Schwarz) -> Schwarz:
    """``schwarz`` with solver options only (no deprecated training options, no live engine)."""
    engine = schwarz.engine.name if isinstance(schwarz.engine, Engine) else schwarz.engine
    return dataclasses.replace(schwarz, engine=engine, comm=None, objective=None, mu=None,
                               sync=None, gather="all")


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
    model. :func:`~pitsolve.fit` drives it with ``objective=LocalObjective(...)`` and
    ``solver=Schwarz(...)`` (the partition, the inner solver and the engine).

    Parameters
    ----------
    model, data, forcing, optimizer
        as for :func:`~pitsolve.fit` (the whole series).
    schwarz
        the partition (windows, overlap), inner solver and engine.
    controls
        solve controls of the windows' solves (``fallback`` is ignored; ``engine`` is the
        engine, see :func:`~pitsolve.solve`).
    objective
        :class:`~pitsolve.training.objectives.LocalObjective` (μ and the synchronisation).
    start
        the windows' initial states: on the forced trajectory of the model
        (``"trajectory"``, consistent windows) or on the data (``"data"``); None starts
        nothing (:meth:`begin` or :meth:`load` later).
    state
        the arrays of :meth:`state_arrays` (e.g. from a checkpoint): restores this process's
        windows and the step count instead of starting; the forced trajectory of the start
        is then not computed.
    """

    kind = "local"

    def __init__(self, model: Model, data: Any, forcing: Any, schwarz: Schwarz, optimizer: Any,
                 controls: dict[str, Any], *, objective: LocalObjective | None = None,
                 start: str | None = "trajectory", state: Mapping[str, Any] | None = None):
        self.forcing, self.optimizer = forcing, optimizer
        self.options = local_objective(schwarz, objective)
        self.engine = engine_of(schwarz, controls.get("engine"))
        self.alg = _solver(schwarz)
        self.controls = {k: v for k, v in controls.items() if k not in ("fallback", "engine")}
        self.data = data
        self.N, self.M = data.shape[-1], model.state_dim
        alpha = getattr(forcing, "initial_alpha", 0.0)
        glob = forced_problem(model, data, forcing, alpha)
        self.part = schwarz.partition(glob.T)
        self.local = self.engine.local(self.part)
        self.count = (glob.T * self.N) * max(1, math.prod(glob.batch_shape))
        self.zhat = forcing_signal(data, self.M)
        self.template = to_namespace(model, array_namespace(data))  # the data's device
        self.steps = 0
        self.windows: dict[int, _Window] = {}
        self._glob = glob
        if state is not None:
            self.load_state(state)
        elif start is not None:
            self.begin(start)

    def begin(self, start: str = "trajectory") -> None:
        """Set up every window from the model: its initial state on the forced trajectory
        (``"trajectory"``) or on the data (``"data"``)."""
        if start not in ("trajectory", "data"):
            raise ValueError(f"start must be 'trajectory' or 'data', got {start!r}")
        model, optimizer = self.template, self.optimizer
        alpha = getattr(self.forcing, "initial_alpha", 0.0)
        # a consistent start: the windows' initial states on the forced trajectory of θ_0
        start_sol = solve(self._glob, self.alg, engine=self.engine, **self.controls)
        if not is_successful(start_sol):
            raise SolverError(start_sol)
        # initial states: on the forced trajectory (consistent windows) or the data (ẑ)
        init = start_sol.states if start == "trajectory" else self.zhat[..., 1:, :]
        for p in self.local:
            c = self.part.covered(p)[0]
            variables = model.params if p == 0 else Params(
                {**model.params, _B: init[..., c - 1, :].copy()})
            w = _Window(variables, optimizer.init(variables), alpha)
            w.states = start_sol.states[..., c : self.part.bounds[p + 1], :].copy()
            self.windows[p] = w

    # -- the training state (checkpoints) ---------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray] | None:
        r"""Every window's training state as named NumPy arrays; a collective call.

        For each window p:

        - ``window/<p>/var/<name>``: its variables — its copy θ_p of the parameters (all
          equal with ``sync="allreduce"``) and, for p ≥ 1, ``initial_state`` :math:`b_p`;
        - ``window/<p>/opt/...``: its optimiser state (step, moments of θ_p and b_p, last
          gradient norm; :meth:`~pitsolve.training.optim.OptimizerState.to_arrays`);
        - ``window/<p>/alpha``: its forcing α (aGTF adapts it per window);
        - ``window/<p>/states``: its last forced trajectory, the inner solver's warm start.

        plus ``steps``, the optimiser steps taken. With the MPI engine the windows are
        gathered on rank 0, which returns all of them; the other ranks return None.
        """
        mine: dict[str, np.ndarray] = {}
        for p, w in self.windows.items():
            pre = f"window/{p}/"
            mine.update({f"{pre}var/{k}": to_numpy(v) for k, v in w.variables.items()})
            mine.update(w.opt_state.to_arrays(prefix=f"{pre}opt/"))
            mine[f"{pre}alpha"] = np.asarray(w.alpha, dtype=np.float64)
            mine[f"{pre}states"] = to_numpy(w.states)
        mine["steps"] = np.asarray(self.steps, dtype=np.int64)
        parts = self.engine.gather(mine)
        return None if parts is None else {k: v for part in parts for k, v in part.items()}

    def load_state(self, arrays: Mapping[str, Any]) -> None:
        """Restore this process's windows and the step count from :meth:`state_arrays`.

        ``arrays`` may hold other entries and other processes' windows (a whole checkpoint).

        Raises
        ------
        ValueError
            If an entry is missing or has another shape than this model and partition give.
        """
        xp = array_namespace(self.data)
        batch = tuple(self.data.shape[:-2])

        def get(key: str, shape: tuple[int, ...]) -> Any:
            if key not in arrays:
                raise ValueError(f"the local-training state has no entry {key!r}")
            a = to_numpy(arrays[key])
            if tuple(a.shape) != shape:
                raise ValueError(f"the local-training state entry {key!r} has shape {a.shape}, "
                                 f"expected {shape} (another model or partition?)")
            return a

        windows: dict[int, _Window] = {}
        for p in self.local:
            pre = f"window/{p}/"
            c, e = self.part.covered(p)
            shapes = {k: tuple(v.shape) for k, v in self.template.params.items()}
            if p > 0:
                shapes[_B] = (*batch, self.M)
            variables = Params({k: xp.asarray(get(f"{pre}var/{k}", shape))
                                for k, shape in shapes.items()})
            opt_state = OptimizerState.from_arrays(arrays, variables, prefix=f"{pre}opt/")
            w = _Window(variables, opt_state, float(get(f"{pre}alpha", ())))
            w.states = xp.asarray(get(f"{pre}states", (*batch, e - c, self.M)))
            windows[p] = w
        steps = int(get("steps", ()))
        self.windows, self.steps = windows, steps

    def snapshot(self) -> tuple[int, dict[int, _Window]]:
        """This process's training state, for :meth:`restore` (variables are immutable)."""
        return self.steps, {p: dataclasses.replace(w, states=w.states.copy())
                            for p, w in self.windows.items()}

    def restore(self, snapshot: tuple[int, dict[int, _Window]]) -> None:
        """Go back to the state of :meth:`snapshot`."""
        self.steps, windows = snapshot
        self.windows = {p: dataclasses.replace(w, states=w.states.copy())
                        for p, w in windows.items()}

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
        model = self.template.replace(self._theta(w.variables))
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
            w.alpha = estimate_alpha(self.template.replace(self._theta(w.variables)),
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
                w.penalty += 0.5 * self.options.mu * float((d * d).sum())
                w.mismatch = max(w.mismatch, float(xp.abs(d).max()))
        return prev, G, d_left, d_right

    def _gradient(self, p: int, sol: Any, left: Any, right: Any) -> Params:
        """∇ of J_p with respect to window p's variables (θ_p and b_p)."""
        w, mu = self.windows[p], self.options.mu
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

    def step(self) -> StepResult:
        """One optimiser step of every window.

        Returns its :class:`~pitsolve.training.objectives.StepResult`: the global one-step
        loss (the sum of the windows' own terms) with ``sync="allreduce"``, where it travels
        in the gradients' all-reduce, NaN with ``sync="neighbour"``, which has no collective
        (see :meth:`loss`); and the inner solvers' iterations, summed over windows.

        Raises
        ------
        StepFailed
            If a window's solve fails or a gradient is not finite.
        """
        try:
            loss = self._step()
        except (SolverError, FloatingPointError) as exc:
            raise StepFailed("local training failed", str(exc)) from exc
        return StepResult(loss, self.iterations())

    def _step(self) -> float:
        engine, part = self.engine, self.part
        with engine.guard():
            sols = dict(zip(self.local, engine.map(self._forward, self.local), strict=True))
            left, right = self._messages()
            grads = dict(zip(self.local, engine.map(
                lambda p: self._gradient(p, sols[p], left[p], right[p]), self.local),
                strict=True))
            loss = float("nan")
            if self.options.sync == "allreduce":
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
            if self.options.sync == "neighbour":
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
        return self.template.replace(self._template.unflatten(vec))

    def alpha(self) -> float:
        """The windows' mean α."""
        with self.engine.guard():
            return float(self.engine.allreduce(sum(w.alpha for w in self.windows.values()))
                         / self.part.P)

    # -- what the epoch loop asks (pitsolve.training.loop) --------------------------------------
    def with_params(self, params: Any) -> Model:
        """The model with ``params``, on the data's device (e.g. a checkpoint's best model)."""
        xp = array_namespace(self.data)
        return self.template.replace(Params({k: xp.asarray(v) for k, v in params.items()}))

    @property
    def interruptible(self) -> bool:
        """Ctrl-C can stop it at an epoch's end in one process (under MPI it aborts the job)."""
        return self.engine.size == 1

    @property
    def is_root(self) -> bool:
        return self.engine.rank == 0

    def guard(self) -> contextlib.AbstractContextManager[None]:
        """The engine's guard: an exception on one rank ends the whole job."""
        return self.engine.guard()

    def on_root(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0 only; its result, or its exception, on every rank."""
        return self.engine.on_root(fn)

    def config(self) -> dict[str, Any]:
        """What a checkpoint records of the solver and the objective, and a resume must match:
        the partition (T, windows, overlap, bounds), ``sync`` and ``mu``."""
        part = self.part
        return {"T": part.T, "windows": part.P, "overlap": part.overlap,
                "sync": self.options.sync, "mu": float(self.options.mu),
                "bounds": list(part.bounds)}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """``(arrays, metadata)`` of a checkpoint (:meth:`state_arrays` and the ``schwarz``
        configuration), on rank 0; None on the other ranks. A collective call."""
        arrays = self.state_arrays()
        return None if arrays is None else (arrays, {"schwarz": self.config()})

    def load(self, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Continue from a checkpoint (:meth:`load_state`)."""
        self.load_state(arrays)

    def epoch_loss(self, steps: list[StepResult]) -> float:
        """The global one-step loss of the last step (a reduction)."""
        return self.loss()

    def epoch_stats(self, steps: list[StepResult]) -> dict[str, Any]:
        return {"overlap_mismatch": self.mismatch()}

    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate(self.steps))

    def iterations(self) -> int:
        """Inner solver iterations of the last step, summed over windows."""
        with self.engine.guard():
            return int(self.engine.allreduce(sum(w.iterations for w in self.windows.values())))

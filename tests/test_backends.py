"""The backend layer: chosen once per solve, carried by the solution, and each backend runs
only its own kernels; GMRES's iteration limit and the trajectory-Jacobian operator."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from numba.core.dispatcher import Dispatcher

import pitsolve as ps
from pitsolve.backends import Backend, for_arrays, get_backend, select
from pitsolve.kernels.krylov import gmres
from pitsolve.operators import TrajectoryJacobian
from pitsolve.testing import problems

_CALL = Dispatcher.__call__


@pytest.fixture
def numba_calls(monkeypatch):
    """The names of the Numba kernels entered from Python (calls between compiled functions
    do not go through the dispatcher, so each entry from Python counts once)."""
    calls = []

    def recording(self, *args, **kwargs):
        calls.append(self.py_func.__name__)
        return _CALL(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "__call__", recording)
    return calls


def _problems():
    """One small problem per built-in model family, with inputs where the model takes them."""
    rng = np.random.default_rng(0)
    out = {}
    m, h0, _ = problems.shplrnn_3x50(T=60)
    out["shplrnn"] = ps.RecurrenceProblem(m, h0, T=60)
    out["clipped"] = ps.RecurrenceProblem(ps.models.ClippedShPLRNN(3, 8, seed=1),
                                          0.1 * rng.normal(size=3), T=60)
    out["alrnn"] = ps.RecurrenceProblem(ps.models.ALRNN(3, 2, seed=1),
                                        0.1 * rng.normal(size=3), T=60)
    out["elman"] = ps.RecurrenceProblem(ps.models.Elman(4, 2, seed=1), np.zeros((2, 4)),
                                        inputs=rng.normal(size=(2, 60, 2)))
    out["gru"] = ps.RecurrenceProblem(ps.models.GRU(4, 2, seed=1), np.zeros(4),
                                      inputs=rng.normal(size=(60, 2)))
    out["ssm"] = ps.RecurrenceProblem(ps.models.LinearSSM(3, 2, readout_hidden=4, seed=1),
                                      np.zeros(3), inputs=rng.normal(size=(60, 2)))
    out["lorenz"] = ps.RecurrenceProblem(ps.models.ODEStep(ps.models.Lorenz63(), dt=0.001),
                                         np.array([1.0, 1.0, 20.0]), T=60)
    return out


PROBLEMS = _problems()
ALGORITHMS = [
    ps.Sequential(),
    ps.DEER(),
    ps.DEER(jacobian="diagonal"),
    ps.DEER(jacobian="none"),
    ps.DEER(damping=ps.LineSearch()),
    ps.DEER(damping=ps.LevenbergMarquardt()),
    ps.NewtonKrylov(),
    ps.Schwarz(windows=3, overlap=8, inner=ps.DEER()),
]


@pytest.mark.parametrize("alg", ALGORITHMS, ids=repr)
@pytest.mark.parametrize("name", PROBLEMS)
def test_numpy_backend_runs_no_numba_kernel(name, alg, numba_calls):
    """``backend="numpy"``: solve, every cotangent of the gradient — and no Numba kernel;
    the same solve on the Numba backend gives the same trajectory and gradient."""
    prob = PROBLEMS[name]
    ref = ps.solve(prob, alg, rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(1).normal(size=ref.states.shape)
    ref_cot = ref.vjp(g)
    numba_calls.clear()
    sol = ps.solve(prob, alg, backend="numpy", rtol=1e-10, atol=1e-12)
    assert ps.is_successful(sol) and sol.backend is get_backend("numpy")
    cot = sol.vjp(g)
    parts = [cot.params.flatten(), cot.h0] + ([] if cot.inputs is None else [cot.inputs])
    assert numba_calls == [], f"backend='numpy' ran Numba kernels: {sorted(set(numba_calls))}"
    np.testing.assert_allclose(sol.states, ref.states, rtol=1e-7, atol=1e-9)
    ref_parts = [ref_cot.params.flatten(), ref_cot.h0] + (
        [] if ref_cot.inputs is None else [ref_cot.inputs])
    for a, b in zip(parts, ref_parts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * max(1.0, np.abs(b).max()))


def test_numba_backend_runs_its_kernels(numba_calls):
    """The recording sees the Numba backend's kernels: the test above can fail."""
    sol = ps.solve(PROBLEMS["shplrnn"], ps.DEER())
    sol.vjp(np.ones_like(sol.states)).params  # noqa: B018
    assert "shplrnn_eval" in numba_calls
    assert {"_blocked_reverse", "_sequential_reverse"} & set(numba_calls) or any(
        "reverse" in c for c in numba_calls)


def test_training_on_the_numpy_backend_runs_no_numba_kernel(numba_calls):
    data = ps.dsr.lorenz63(T=80, dt=0.01, seed=1)
    model = ps.models.ShPLRNN(3, 8, seed=2)
    for solver in (ps.DEER(backend="numpy"), ps.Sequential(backend="numpy")):
        loss, grads = ps.loss_and_grad(model, data, forcing=ps.GTF(alpha=0.3), solver=solver)
        assert np.isfinite(loss) and np.isfinite(grads.flatten()).all()
    assert numba_calls == []
    ref, ref_grads = ps.loss_and_grad(model, data, forcing=ps.GTF(alpha=0.3))
    assert loss == pytest.approx(ref, rel=1e-8)
    np.testing.assert_allclose(grads.flatten(), ref_grads.flatten(), rtol=1e-6, atol=1e-10)


# -- selection ------------------------------------------------------------------------------
def test_the_backend_is_chosen_once_and_carried():
    prob = PROBLEMS["shplrnn"]
    assert ps.solve(prob, ps.DEER()).backend is get_backend("numba")
    assert ps.solve(prob, ps.DEER(backend="numpy")).backend is get_backend("numpy")
    # the solve control overrides the algorithm's option
    assert ps.solve(prob, ps.DEER(backend="numpy"), backend="numba").backend.name == "numba"
    state = ps.init(prob, ps.NewtonKrylov(backend="numpy"))
    assert state.backend.name == "numpy" and state.model.backend is state.backend
    assert select(np, None, "auto") is for_arrays(np.zeros(1)) is get_backend("numba")


def test_gradient_routes_are_fields_not_statistics():
    prob = PROBLEMS["elman"]
    for alg, rule in [(ps.Sequential(), ps.adjoint.BPTTAdjoint),
                      (ps.Sequential(backend="numpy"), ps.adjoint.ScanAdjoint),
                      (ps.DEER(), ps.adjoint.ScanAdjoint),
                      (ps.NewtonKrylov(window=25), ps.adjoint.MatrixFreeAdjoint),
                      (ps.Schwarz(windows=2, overlap=4), ps.adjoint.BPTTAdjoint)]:
        sol = ps.solve(prob, alg)
        assert isinstance(sol.adjoint, rule), alg
        assert not {"adjoint", "kernel"} & set(sol.stats.extra)
    assert ps.solve(prob, ps.NewtonKrylov(window=25)).adjoint.window == 25


def test_invalid_backends_are_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        get_backend("fortran")
    with pytest.raises(ValueError, match="backend must be"):
        ps.DEER(backend="gpu")
    with pytest.raises(ValueError, match="CuPy"):
        ps.solve(PROBLEMS["shplrnn"], ps.DEER(), backend="cupy")
    assert isinstance(get_backend(get_backend("numpy")), Backend)


# -- GMRES: one meaning of its limits -----------------------------------------------------------
def test_gmres_counts_inner_iterations_and_matches_scipy():
    rng = np.random.default_rng(3)
    n = 60
    A = np.eye(n) + 0.3 * rng.normal(size=(n, n)) / np.sqrt(n)
    b = rng.normal(size=n)
    x, ok, its = gmres(lambda v: A @ v, b, rtol=1e-12, restart=10, maxiter=500)
    assert ok and its <= 500
    np.testing.assert_allclose(A @ x, b, rtol=0, atol=1e-10 * np.linalg.norm(b))
    x_ref, info = spla.gmres(A, b, rtol=1e-12, atol=0.0, restart=10, maxiter=50)
    assert info == 0
    np.testing.assert_allclose(x, x_ref, rtol=1e-8, atol=1e-10)
    # the limit counts products with A, whatever the restart length
    for restart in (3, 7, 60):
        products = []
        _, ok, its = gmres(lambda v, products=products: products.append(1) or A @ v, b,
                           rtol=1e-15, restart=restart, maxiter=11)
        assert not ok and its == 11
        assert len(products) - its == -(-11 // restart)  # + one residual per cycle


def test_gmres_left_preconditioning_and_degenerate_cases():
    rng = np.random.default_rng(4)
    d = rng.uniform(1, 100, 40)
    b = rng.normal(size=40)
    x, ok, its = gmres(lambda v: d * v, b, psolve=lambda v: v / d, rtol=1e-12, restart=5,
                       maxiter=10)
    assert ok and its == 1  # an exact preconditioner: one iteration
    np.testing.assert_allclose(d * x, b, rtol=1e-12)
    x, ok, its = gmres(lambda v: d * v, np.zeros(40), rtol=1e-8, restart=5, maxiter=10)
    assert ok and its == 0 and not x.any()
    x, ok, _ = gmres(lambda v: np.full_like(v, np.nan), b, rtol=1e-8, restart=5, maxiter=10)
    assert not ok  # a non-finite operator ends the solve, unconverged


# -- the trajectory-Jacobian operator ------------------------------------------------------------
@pytest.mark.parametrize("name", ["shplrnn", "elman", "gru", "ssm"])
def test_trajectory_jacobian_products_and_preconditioner(name):
    prob = PROBLEMS[name]
    backend = get_backend("numba")
    model = backend.bind(prob.working_model())
    states = ps.solve(prob, ps.Sequential()).states
    prev = np.concatenate([prob.h0[..., None, :], states[..., :-1, :]], axis=-2)
    op = TrajectoryJacobian(model, prev, prob.inputs, backend)
    rng = np.random.default_rng(5)
    v, u = rng.normal(size=prev.shape), rng.normal(size=prev.shape)
    # (J_F v)_t = v_t - J_t v_{t-1}, from the model's Jacobians
    J = model.jacobian(prev, prob.inputs)
    if J.ndim == v.ndim:  # diagonal Jacobians
        Jv = J[..., 1:, :] * v[..., :-1, :]
    else:
        Jv = np.einsum("...ij,...j->...i", J[..., 1:, :, :], v[..., :-1, :])
    expected = v.copy()
    expected[..., 1:, :] -= Jv
    np.testing.assert_allclose(op.matvec(v), expected, rtol=1e-12, atol=1e-12)
    # the transposed product is the adjoint: <J_F v, u> = <v, J_Fᵀ u>
    assert np.sum(op.matvec(v) * u) == pytest.approx(np.sum(v * op.rmatvec(u)), rel=1e-12)
    # the preconditioner inverts the quasi-DEER operator, forwards and transposed
    d = op.diagonal
    z = op.precondition(v)
    back = z.copy()
    back[..., 1:, :] -= d[..., 1:, :] * z[..., :-1, :]
    np.testing.assert_allclose(back, v, rtol=1e-12, atol=1e-12)
    w = op.precondition_transpose(u)
    back = w.copy()
    back[..., :-1, :] -= d[..., 1:, :] * w[..., 1:, :]
    np.testing.assert_allclose(back, u, rtol=1e-12, atol=1e-12)
    # solves, both ways
    x = op.solve(v, rtol=1e-12, restart=20, maxiter=400).x
    np.testing.assert_allclose(op.matvec(x), v, rtol=1e-9, atol=1e-9 * np.abs(v).max())
    y = op.solve(u, transpose=True, rtol=1e-12, restart=20, maxiter=400).x
    np.testing.assert_allclose(op.rmatvec(y), u, rtol=1e-9, atol=1e-9 * np.abs(u).max())


def test_newton_krylov_and_the_matrix_free_adjoint_share_the_operator(monkeypatch):
    built = []
    original = TrajectoryJacobian.__init__

    def spy(self, *args, **kwargs):
        built.append(args[1].shape)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TrajectoryJacobian, "__init__", spy)
    prob = PROBLEMS["elman"]
    sol = ps.solve(prob, ps.NewtonKrylov())
    forward = len(built)
    assert forward == sol.stats.iterations > 0
    sol.vjp(np.ones_like(sol.states)).params  # noqa: B018
    assert len(built) == forward + 1  # one window, transposed


class _Duck:
    """A model that is not a :class:`~pitsolve.models.Model`: the protocol's methods only
    (no ``on``, ``bptt``, ``sequential`` or compiled hooks)."""

    state_dim, input_dim, jacobian_structure = 2, 0, "dense"

    def __init__(self):
        self.params = ps.models.Params(W=np.array([[0.5, 0.2], [-0.3, 0.6]]))

    def f(self, h, x=None):
        return np.tanh(h @ self.params["W"].T)

    def jacobian(self, h, x=None):
        y = self.f(h)
        return (1 - y * y)[..., :, None] * self.params["W"]

    def f_and_jacobian(self, h, x=None):
        return self.f(h), self.jacobian(h)

    def diagonal_jacobian(self, h, x=None):
        return np.diagonal(self.jacobian(h), axis1=-2, axis2=-1).copy()

    def f_and_diagonal_jacobian(self, h, x=None):
        return self.f(h), self.diagonal_jacobian(h)

    def jvp(self, h, x, v):
        return np.einsum("...ij,...j->...i", self.jacobian(h), v)

    def vjp_h(self, h, x, u):
        return np.einsum("...ij,...i->...j", self.jacobian(h), u)

    def vjp_params(self, h, x, u):
        g = (1 - self.f(h) ** 2) * u
        return ps.models.Params(W=g.reshape(-1, 2).T @ np.broadcast_to(h, g.shape).reshape(-1, 2))

    def vjp_inputs(self, h, x, u):
        return None


@pytest.mark.parametrize("alg", [ps.Sequential(), ps.DEER(), ps.DEER(backend="numpy"),
                                 ps.NewtonKrylov(), ps.Schwarz(windows=2, overlap=5)], ids=repr)
def test_a_duck_typed_model_solves_and_differentiates_everywhere(alg):
    """Binding to a backend, the adjoint rules and the forced models accept a model that only
    implements the protocol (no Model base class)."""
    prob = ps.RecurrenceProblem(_Duck(), np.ones(2), T=50)
    ref = ps.solve(prob, ps.Sequential(backend="numpy"))
    sol = ps.solve(prob, alg)
    np.testing.assert_allclose(sol.states, ref.states, rtol=1e-8, atol=1e-10)
    g = np.ones_like(sol.states)
    np.testing.assert_allclose(sol.vjp(g).params["W"], ref.vjp(g).params["W"], rtol=1e-7)
    data = np.random.default_rng(0).normal(size=(40, 2))
    loss, _ = ps.loss_and_grad(_Duck(), data, forcing=ps.GTF(alpha=0.3), solver=alg)
    assert np.isfinite(loss)

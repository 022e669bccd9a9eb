"""check_derivatives itself: correct user models pass, each wrong derivative is named."""

from __future__ import annotations

import numpy as np
import pytest

from pitsolve.models.base import Model, Params
from pitsolve.models.plrnn import ShPLRNN
from pitsolve.testing import DerivativeReport, check_derivatives


class Tanh(Model):
    """h_t = tanh(W h + c): only f, jacobian and vjp_params; the rest from the base class."""

    def __init__(self, D: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        super().__init__(
            Params(W=rng.normal(0, 1 / np.sqrt(D), (D, D)), c=rng.normal(0, 0.1, D)), state_dim=D
        )

    def f(self, h, x=None):
        return np.tanh(h @ self.params["W"].T + self.params["c"])

    def jacobian(self, h, x=None):
        s = 1 - self.f(h) ** 2
        return s[..., :, None] * self.params["W"]

    def vjp_params(self, h, x, u):
        g = (u * (1 - self.f(h) ** 2)).reshape(-1, self.state_dim)
        return Params(W=g.T @ h.reshape(-1, self.state_dim), c=g.sum(0))


class DrivenTanh(Model):
    """h_t = tanh(W h + U x + c), a model with inputs."""

    def __init__(self, D: int, N: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        p = Params(
            W=rng.normal(0, 0.3, (D, D)), U=rng.normal(0, 0.5, (D, N)), c=rng.normal(0, 0.1, D)
        )
        super().__init__(p, state_dim=D, input_dim=N)

    def _s(self, h, x):
        return 1 - self.f(h, x) ** 2

    def f(self, h, x=None):
        p = self.params
        return np.tanh(h @ p["W"].T + x @ p["U"].T + p["c"])

    def jacobian(self, h, x=None):
        return self._s(h, x)[..., :, None] * self.params["W"]

    def vjp_params(self, h, x, u):
        D, N = self.state_dim, self.input_dim
        g = (u * self._s(h, x)).reshape(-1, D)
        return Params(W=g.T @ h.reshape(-1, D), U=g.T @ x.reshape(-1, N), c=g.sum(0))

    def vjp_inputs(self, h, x, u):
        return (u * self._s(h, x)) @ self.params["U"]


class Diagonal(Model):
    """h_t = λ ⊙ tanh(h) + B x: a diagonal-structure model with inputs."""

    jacobian_structure = "diagonal"

    def __init__(self, D: int, N: int):
        rng = np.random.default_rng(3)
        super().__init__(
            Params(lam=rng.uniform(0.2, 0.9, D), B=rng.normal(size=(D, N))),
            state_dim=D,
            input_dim=N,
        )

    def f(self, h, x=None):
        return self.params["lam"] * np.tanh(h) + x @ self.params["B"].T

    def jacobian(self, h, x=None):
        return self.params["lam"] * (1 - np.tanh(h) ** 2) + 0 * x[..., :1]

    def vjp_params(self, h, x, u):
        D, N = self.state_dim, self.input_dim
        return Params(
            lam=(u * np.tanh(h)).reshape(-1, D).sum(0), B=u.reshape(-1, D).T @ x.reshape(-1, N)
        )

    def vjp_inputs(self, h, x, u):
        return u @ self.params["B"]


def test_minimal_user_model_passes_with_base_defaults():
    """jvp, vjp_h, diagonal_jacobian and the fused forms come from Model and are right."""
    report = check_derivatives(Tanh(5), batch_shape=(3, 2))
    assert isinstance(report, DerivativeReport) and report.passed
    names = [c.name for c in report.checks]
    for name in [
        "jacobian",
        "diagonal_jacobian",
        "jvp",
        "vjp_h",
        "vjp_params[W]",
        "vjp_params[c]",
        "f_and_jacobian",
        "f_and_diagonal_jacobian",
    ]:
        assert name in names
    assert "vjp_inputs" not in names  # no inputs
    assert all(c.error < 1e-6 for c in report.checks)


def test_models_with_inputs_and_diagonal_structure_pass():
    report = check_derivatives(DrivenTanh(4, 3))
    assert report.passed and report["vjp_inputs"].passed
    report = check_derivatives(Diagonal(6, 2), batch_shape=(5,))
    assert report.passed and "J⊙v" in report["jacobian"].detail


def test_given_points_are_used():
    h = np.random.default_rng(0).normal(size=(7, 4))
    x = np.random.default_rng(1).normal(size=(7, 3))
    report = check_derivatives(DrivenTanh(4, 3), h, x)
    assert report.batch_shape == (7,) and report.passed


class SignErrorVjp(ShPLRNN):
    def vjp_h(self, h, x, u):
        return -super().vjp_h(h, x, u)


def test_sign_error_in_vjp_h_is_named():
    model = SignErrorVjp.from_params(ShPLRNN(3, 10, seed=1).params)
    with pytest.raises(AssertionError, match="derivatives failed: vjp_h\n"):
        check_derivatives(model)
    report = check_derivatives(model, raise_on_error=False)
    assert not report.passed
    assert [c.name for c in report.failures] == ["vjp_h"]
    assert "vjp_h" in str(report) and "FAIL" in str(report)


class ManyErrors(DrivenTanh):
    """A wrong jvp (missing factor), a wrong gradient for c, a transposed vjp_inputs."""

    def jvp(self, h, x, v):
        return v @ self.params["W"].T

    def vjp_params(self, h, x, u):
        g = super().vjp_params(h, x, u)
        return g.replace(c=2 * g["c"])

    def vjp_inputs(self, h, x, u):
        return (u @ self.params["U"]) * 0.5


def test_every_failure_is_named():
    with pytest.raises(AssertionError) as info:
        check_derivatives(ManyErrors(4, 3))
    first_line = str(info.value).splitlines()[0]
    assert first_line == "derivatives failed: jvp, vjp_params[c], vjp_inputs"
    report = check_derivatives(ManyErrors(4, 3), raise_on_error=False)
    assert report["jacobian"].passed and report["vjp_params[W]"].passed
    assert report["vjp_params[U]"].passed and not report["vjp_params[c]"].passed


class WrongDiagonal(ShPLRNN):
    def diagonal_jacobian(self, h, x=None):
        return super().diagonal_jacobian(h, x) + 1e-3


class WrongFused(ShPLRNN):
    def f_and_jacobian(self, h, x=None):
        f, J = super().f_and_jacobian(h, x)
        return f + 1e-3, J


def test_wrong_diagonal_and_fused_forms_are_named():
    r = check_derivatives(WrongDiagonal(3, 8), raise_on_error=False)
    # the fused form (right) disagrees with the unfused one (wrong): both are named
    assert {c.name for c in r.failures} == {"diagonal_jacobian", "f_and_diagonal_jacobian"}
    r = check_derivatives(WrongFused(3, 8), raise_on_error=False)
    assert [c.name for c in r.failures] == ["f_and_jacobian"]
    assert "f part" in r["f_and_jacobian"].detail


class Broken(Tanh):
    def jacobian(self, h, x=None):
        return super().jacobian(h, x)[..., 0]  # wrong shape

    def vjp_params(self, h, x, u):
        raise NotImplementedError("not written yet")


class NoInputVjp(DrivenTanh):
    vjp_inputs = Model.vjp_inputs


def test_exceptions_and_shapes_become_failures():
    r = check_derivatives(Broken(3), raise_on_error=False)
    assert not r["jacobian"].passed and "shape" in r["jacobian"].detail
    assert not r["vjp_params"].passed and "NotImplementedError" in r["vjp_params"].detail
    r = check_derivatives(NoInputVjp(3, 2), raise_on_error=False)
    assert [c.name for c in r.failures] == ["vjp_inputs"]
    assert "must implement vjp_inputs" in r["vjp_inputs"].detail


def test_report_table_and_lookup():
    report = check_derivatives(ShPLRNN(2, 4, dtype=np.float32), rtol=1e-5, atol=1e-7)
    text = str(report)
    assert "rtol=1e-05" in text and "atol=1e-07" in text and text.endswith("all passed")
    for c in report.checks:
        assert c.name in text
    assert bool(report)
    with pytest.raises(KeyError, match="no check named"):
        report["nonsense"]


def test_tolerances_are_respected():
    """A relative error of 1e-4 in jvp fails the default rtol=1e-6 and passes rtol=1e-3."""

    class Slightly(ShPLRNN):
        def jvp(self, h, x, v):
            return super().jvp(h, x, v) * (1 + 1e-4)

    model = Slightly(3, 6)
    report = check_derivatives(model, raise_on_error=False)
    assert [c.name for c in report.failures] == ["jvp"]
    assert 0.5e-4 < report["jvp"].error < 2e-4
    assert check_derivatives(model, rtol=1e-3).passed

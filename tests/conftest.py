"""Shared test configuration: a deterministic hypothesis profile and markers' behaviour."""

import os
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", deadline=None, max_examples=400)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config, items):
    from pitsolve.backends import has_cupy

    if has_cupy():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fake_dysts(monkeypatch):
    """A stand-in with the interface of dysts.flows (rhs(X, t), ic, period, dt,
    maximum_lyapunov_estimated, constructor params)."""

    class Lorenz:
        def __init__(self, sigma=10.0, rho=28.0, beta=8 / 3):
            self.sigma, self.rho, self.beta = sigma, rho, beta
            self.ic = np.array([-9.8, -5.7, 25.0])
            self.period = 1.5
            self.dt = 0.0003  # dysts' integration step
            self.maximum_lyapunov_estimated = 0.89

        def rhs(self, X, t):
            x, y, z = X
            return self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z

    class MackeyGlass(Lorenz):
        delay = True

    flows = types.ModuleType("dysts.flows")
    flows.Lorenz = Lorenz
    flows.MackeyGlass = MackeyGlass
    package = types.ModuleType("dysts")
    package.flows = flows
    monkeypatch.setitem(sys.modules, "dysts", package)
    monkeypatch.setitem(sys.modules, "dysts.flows", flows)
    return flows

r"""Piecewise-linear RNNs for dynamical-systems reconstruction (MATH.md §5).

.. math::

    \text{shPLRNN:}\quad z_t = a \odot z_{t-1} + W_1 \operatorname{relu}(W_2 z_{t-1} + h_2) + h_1

    \text{clipped:}\quad z_t = a \odot z_{t-1}
        + W_1 [\operatorname{relu}(W_2 z_{t-1} + h_2) - \operatorname{relu}(W_2 z_{t-1})] + h_1

    \text{ALRNN:}\quad z_t = a \odot z_{t-1} + W \Phi(z_{t-1}) + h

with Jacobians :math:`J = \operatorname{diag}(a) + W_1 \operatorname{diag}(m) W_2` (shPLRNN
:math:`m = 1[W_2 z + h_2 > 0]`, clipped :math:`m = 1[W_2 z + h_2 > 0] - 1[W_2 z > 0]`) and
:math:`J = \operatorname{diag}(a) + W \operatorname{diag}(\Phi')` (ALRNN).

Convention at the kinks: :math:`\operatorname{relu}'(0) = 0` (strict ``> 0``), used by every
derivative alike, so ``jacobian``, ``jvp``, ``vjp_h``, ``vjp_params`` and ``diagonal_jacobian``
agree with each other everywhere, kinks included.
"""

from .alrnn import ALRNN
from .shplrnn import ClippedShPLRNN, ShPLRNN

__all__ = ["ALRNN", "ClippedShPLRNN", "ShPLRNN"]

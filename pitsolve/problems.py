"""Problems: the data of a recurrence, validated once at the boundary.

Notation (MATH.md §1): time t = 1..T, state h_t ∈ R^D, arrays laid out ``(..., T, D)`` with
leading batch axes.
"""

from __future__ import annotations

from typing import Any

from ._arrays import array_namespace
from ._validation import as_float_array, check_finite, check_positive_int, result_float_dtype
from .parallel.slices import collective_check, even_rows

__all__ = ["LinearRecurrenceProblem", "RecurrenceProblem"]


class LinearRecurrenceProblem:
    r"""The affine recurrence :math:`h_t = A_t h_{t-1} + b_t`, t = 1..T, with :math:`h_0` given.

    Parameters
    ----------
    A
        array ``(..., T, D)`` (diagonal :math:`A_t`) or ``(..., T, D, D)`` (dense :math:`A_t`).
    b
        array ``(..., T, D)``.
    h0
        array ``(..., D)``, the initial state.
    comm
        optional MPI communicator (mpi4py): the time axis is split over its ranks. Each rank
        passes its own contiguous slice of ``A`` and ``b`` (rank order is time order; slices
        may be uneven, down to one step) and never the rest; ``h0`` is rank 0's (the other
        ranks may pass None). Building the problem is collective: every rank checks that the
        slices fit together and raises the same ``ValueError`` if not.

    Attributes
    ----------
    structure
        ``"diagonal"`` or ``"dense"``.
    batch_shape, T, D, dtype
        sizes and precision (with ``comm``: T is this rank's number of steps).
    comm, rows
        the communicator (None) and the global steps ``(start, stop)`` this rank holds
        (``(0, T)`` without ``comm``).

    Notes
    -----
    All three arrays share the leading batch axes ``...`` exactly, are float32 or float64
    (mixed precision is promoted to float64), finite, and are all NumPy or all CuPy arrays.
    """

    def __init__(self, A: Any, b: Any, h0: Any, *, comm: Any = None):
        collective_check(comm, lambda: self._validate(A, b, h0, comm))
        self.comm = comm
        self.rows = (0, self.T) if comm is None else _rows_of_ranks(
            comm, (self.batch_shape, self.D, str(self.dtype), self.structure), self.T)

    def _validate(self, A: Any, b: Any, h0: Any, comm: Any) -> None:
        b = as_float_array(b, "b", min_ndim=2)
        A = as_float_array(A, "A", min_ndim=2)
        if h0 is None and comm is not None and comm.Get_rank() != 0:
            h0 = array_namespace(b).zeros((*b.shape[:-2], b.shape[-1]), dtype=b.dtype)
        h0 = as_float_array(h0, "h0", min_ndim=1)
        xp = array_namespace(A, b, h0)
        *batch, T, D = b.shape
        batch = tuple(batch)
        if T == 0:
            raise ValueError(f"b must have T ≥ 1 time steps (axis -2), got shape {b.shape}")
        if D == 0:
            raise ValueError(f"b must have a state dimension D ≥ 1 (axis -1), got shape {b.shape}")
        if A.shape == b.shape:
            structure = "diagonal"
        elif A.shape == (*b.shape, D):
            structure = "dense"
        else:
            raise ValueError(
                f"A must have shape {b.shape} (diagonal A_t) or {(*b.shape, D)} (dense A_t) "
                f"to match b of shape {b.shape} = (batch..., T, D); got {A.shape}"
            )
        if h0.shape != (*batch, D):
            raise ValueError(
                f"h0 must have shape {(*batch, D)} = (batch..., D) to match b of shape "
                f"{b.shape}; got {h0.shape}"
            )
        dtype = result_float_dtype(A, b, h0)
        A, b, h0 = (x if x.dtype == dtype else x.astype(dtype) for x in (A, b, h0))
        for x, name in ((A, "A"), (b, "b"), (h0, "h0")):
            check_finite(x, name)
        self.A, self.b, self.h0 = A, b, h0
        self.structure = structure
        self.batch_shape, self.T, self.D, self.dtype = batch, T, D, dtype
        self.xp = xp

    def __repr__(self) -> str:
        return (
            f"LinearRecurrenceProblem({self.structure}, batch_shape={self.batch_shape}, "
            f"T={self.T}, D={self.D}, dtype={self.dtype})"
        )


def _rows_of_ranks(comm: Any, key: tuple, T: int) -> tuple[int, int]:
    """This rank's global ``(start, stop)``; the same ``ValueError`` on every rank if the
    ranks' slices disagree in anything but their length."""
    keys = comm.allgather((key, T))
    if len({k for k, _ in keys}) > 1:
        desc = "; ".join(f"rank {r}: batch {k[0]}, D={k[1]}, {k[2]}, {k[3]}"
                         for r, (k, _) in enumerate(keys))
        raise ValueError(f"the ranks' slices of the time axis disagree: {desc}")
    start = sum(n for _, n in keys[: comm.Get_rank()])
    return start, start + T


class RecurrenceProblem:
    r"""The nonlinear recurrence :math:`h_t = f(h_{t-1}, x_t; \theta)`, t = 1..T.

    Parameters
    ----------
    model
        a model implementing the pitsolve model protocol (``f``, ``jacobian``, ``jvp``,
        ``vjp_h``, ``vjp_params``, ``vjp_inputs``; see :mod:`pitsolve.models`).
    h0
        array ``(..., D)``, the initial state; its leading axes are the batch axes.
    inputs
        optional array ``(..., T, N_x)`` of inputs :math:`x_t` with the same batch axes.
    T
        number of steps; required when ``inputs`` is None, else inferred (and checked if given).
    comm
        optional MPI communicator (mpi4py): the time axis is split over its ranks. Each rank
        passes its own contiguous slice of ``inputs`` (rank order is time order; slices may be
        uneven, down to one step) or, without inputs, the global ``T``, which is split as
        evenly as possible. ``h0`` is rank 0's (broadcast; the other ranks may pass None).
        Building the problem is collective: invalid input on any rank raises the same
        ``ValueError`` on every rank.

    Attributes
    ----------
    batch_shape, T, D, dtype
        sizes and precision (with ``comm``: T is this rank's number of steps).
    comm, rows
        the communicator (None) and the global steps ``(start, stop)`` this rank holds
        (``(0, T)`` without ``comm``).
    """

    def __init__(self, model: Any, h0: Any, inputs: Any = None, T: int | None = None, *,
                 comm: Any = None):
        if comm is not None:  # rank 0's initial state, on every rank
            h0 = comm.bcast(h0 if comm.Get_rank() == 0 else None, root=0)
        collective_check(comm, lambda: self._validate(model, h0, inputs, T, comm))
        self.comm = comm
        self.rows = (0, self.T)
        if comm is not None:
            key = (self.batch_shape, self.D, str(self.dtype),
                   None if inputs is None else inputs.shape[-1])
            self.rows = _rows_of_ranks(comm, key, self.T)
            total = comm.allreduce(self.T)
            if inputs is not None and T is not None and T != total:
                raise ValueError(f"T={T} does not match the {total} steps of the ranks' "
                                 "slices of inputs")

    def _validate(self, model: Any, h0: Any, inputs: Any, T: int | None, comm: Any) -> None:
        if not callable(getattr(model, "f", None)):
            raise TypeError(
                f"model must implement the pitsolve model protocol (a method f(h, x)); "
                f"got {type(model).__name__}"
            )
        h0 = as_float_array(h0, "h0", min_ndim=1)
        batch, D = tuple(h0.shape[:-1]), h0.shape[-1]
        state_dim = getattr(model, "state_dim", None)
        if state_dim is not None and D != state_dim:
            raise ValueError(f"h0 must have last axis of size model.state_dim={state_dim}, got {D}")
        T = check_positive_int(T, "T", allow_none=True)
        if inputs is None:
            if T is None:
                raise ValueError("T is required when inputs is None (give T=number of steps)")
            if getattr(model, "input_dim", 0):
                raise ValueError(f"model expects inputs of size {model.input_dim}; inputs is None")
            if comm is not None:  # the global T, split evenly
                start, stop = even_rows(T, comm.Get_size(), comm.Get_rank())
                T = stop - start
        else:
            inputs = as_float_array(inputs, "inputs", min_ndim=2)
            array_namespace(h0, inputs)
            if tuple(inputs.shape[:-2]) != batch:
                raise ValueError(
                    f"inputs must have batch axes {batch} matching h0 {h0.shape}, "
                    f"got inputs of shape {inputs.shape} = (batch..., T, N_x)"
                )
            T_in = inputs.shape[-2]
            if T_in == 0:
                raise ValueError(f"inputs must have T ≥ 1 time steps, got shape {inputs.shape}")
            if T is not None and T != T_in and comm is None:
                raise ValueError(f"T={T} does not match inputs with {T_in} time steps")
            T = T_in
            input_dim = getattr(model, "input_dim", None)
            if input_dim is not None and inputs.shape[-1] != input_dim:
                raise ValueError(
                    f"inputs must have last axis of size model.input_dim={input_dim}, "
                    f"got {inputs.shape[-1]}"
                )
            check_finite(inputs, "inputs")
        check_finite(h0, "h0")
        dtype = result_float_dtype(h0, inputs)
        self.model = model
        self._working_model: Any = None
        self.h0 = h0 if h0.dtype == dtype else h0.astype(dtype)
        self.inputs = inputs if inputs is None or inputs.dtype == dtype else inputs.astype(dtype)
        self.batch_shape, self.T, self.D, self.dtype = batch, T, D, dtype
        self.xp = array_namespace(h0, inputs)

    def working_model(self) -> Any:
        """The model with parameters in the problem's precision (float32 stays float32).

        Solvers and adjoints evaluate this one, so a float32 problem never silently computes
        in float64. Computed once per problem.
        """
        if self._working_model is None:
            model = self.model
            dtype = getattr(model, "dtype", None)
            if dtype is not None and dtype != self.dtype and hasattr(model, "astype"):
                model = model.astype(self.dtype)
            self._working_model = model
        return self._working_model

    def __repr__(self) -> str:
        return (
            f"RecurrenceProblem({type(self.model).__name__}, batch_shape={self.batch_shape}, "
            f"T={self.T}, D={self.D}, dtype={self.dtype})"
        )

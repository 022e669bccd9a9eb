"""Numba's CUDA simulator, made fast enough and race-free for tests (``NUMBA_ENABLE_CUDASIM=1``).

The simulator runs each CUDA thread as a Python thread and a block manager polls them at
every ``syncthreads``. Two adjustments, applied by :func:`prepare`:

* a short thread switch interval (``sys.setswitchinterval``): the manager's polling otherwise
  waits out the interpreter's 5 ms switch interval at every barrier (a 10× difference on
  pitsolve's reductions);
* a lock around the simulator's allocation of shared arrays: it looks an array up by source
  line and creates it if missing, unsynchronised, so two threads of one block can each create
  one and no longer share memory — a race that the short switch interval makes frequent
  (2 failures in 200 launches of the block reduction) and that real devices do not have.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["prepare"]

_LOCK = threading.Lock()
_SWITCH_INTERVAL = 2e-5


def prepare() -> bool:
    """Apply the adjustments if the simulator is on; True if it is."""
    from ..kernels.cuda.registry import simulating

    if not simulating():
        return False
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if not getattr(shared.array, "_pitsolve_locked", False):
        allocate = shared.array

        def array(self, shape, dtype, alignment=None):  # type: ignore[no-untyped-def]
            if alignment is not None or shape == 0:  # errors, dynamic memory: as before
                return allocate(self, shape, dtype, alignment)
            frame = sys._getframe(1)  # keyed by the calling line, as the simulator does
            caller = (frame.f_code.co_filename, frame.f_lineno)
            with _LOCK:
                res = self._allocations.get(caller)
                if res is None:
                    if isinstance(dtype, kernelapi.types.Type):
                        dtype = kernelapi.numpy_support.as_dtype(dtype)
                    res = self._allocations[caller] = np.empty(shape, dtype)
            return res

        array._pitsolve_locked = True  # type: ignore[attr-defined]
        shared.array = array
    sys.setswitchinterval(_SWITCH_INTERVAL)
    return True

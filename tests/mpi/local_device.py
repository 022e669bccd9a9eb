"""Every rank picks device (node-local rank) mod (devices): checked with a CuPy stand-in that
reports two devices and records which one a rank makes current."""

import json
import types

from mpi4py import MPI

import pitsolve as ps

used = []
cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 2),
    Device=lambda i: types.SimpleNamespace(use=lambda: used.append(i)),
))
device = ps.parallel.use_local_device(cupy=cupy)
rank, size = ps.parallel.local_rank()
report = MPI.COMM_WORLD.gather({"device": device, "used": used, "local": [rank, size]})
if MPI.COMM_WORLD.Get_rank() == 0:
    print(json.dumps(report))

"""Word on the screen while Numba compiles kernels.

Every compiled kernel is cached on disk (``cache=True``), so compilation happens on the first
run after an install or upgrade only — but then it takes tens of seconds, which must not pass
in silence. :func:`compile_messages` listens to Numba's ``numba:compile`` events and keeps one
status line up to date: the kernel being compiled, how many are done, the time spent.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["CompileLog", "compile_messages"]


class CompileLog:
    """Counts top-level kernel compilations (a kernel's callees compile inside it) and
    redraws a status line on ``stream`` at every start; ``quiet`` only counts."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.count = 0
        self.seconds = 0.0
        self._depth = 0
        self._t0 = 0.0

    def start(self, name: str) -> None:
        self._depth += 1
        if self._depth > 1:
            return
        self._t0 = time.perf_counter()
        if not self.quiet:
            self.stream.write(
                f"\rcompiling kernels (first run only; cached afterwards): {self.count} done, "
                f"{self.seconds:.0f} s; now {name} ...\033[K")
            self.stream.flush()

    def end(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.count += 1
            self.seconds += time.perf_counter() - self._t0

    def as_dict(self) -> dict[str, float]:
        """``{"kernels": count, "seconds": seconds}`` so far."""
        return {"kernels": self.count, "seconds": round(self.seconds, 2)}

    def close(self) -> None:
        """End the status line (if one was drawn) with the totals."""
        if self.count and not self.quiet:
            self.stream.write(f"\rcompiled {self.count} kernels in {self.seconds:.0f} s "
                              "(cached for the next runs)\033[K\n")
            self.stream.flush()


@contextlib.contextmanager
def compile_messages(stream: IO[str] | None = None, *, quiet: bool = False
                     ) -> Iterator[CompileLog]:
    """Within the block, report Numba compilations on ``stream`` (default stderr).

    Yields the :class:`CompileLog` (``count``, ``seconds``). Without Numba's event API the
    block runs silently.
    """
    log = CompileLog(stream, quiet=quiet)
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - numba is a dependency
        yield log
        return

    class _Listener(event.Listener):
        def on_start(self, ev: Any) -> None:
            fn = getattr(ev.data.get("dispatcher"), "py_func", None)
            log.start(getattr(fn, "__name__", "kernel"))

        def on_end(self, ev: Any) -> None:
            log.end()

    listener = _Listener()
    event.register("numba:compile", listener)
    try:
        yield log
    finally:
        event.unregister("numba:compile", listener)
        log.close()

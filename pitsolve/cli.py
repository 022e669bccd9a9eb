"""The ``pitsolve`` command line.

    pitsolve reconstruct [SYSTEM] ...   train a model on a chaotic time series (the main job)
    pitsolve --version
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pitsolve",
        description="Solve and train nonlinear recurrences in parallel over time.",
    )
    parser.add_argument("--version", action="version", version=f"pitsolve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rec = sub.add_parser(
        "reconstruct", help="reconstruct a dynamical system from a time series (default Lorenz-63)"
    )
    rec.add_argument("system", nargs="?", default="lorenz63")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pitsolve`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "reconstruct":
        print(
            "pitsolve: 'reconstruct' is not yet available in this version: the training "
            "stack (DEER, GTF, fit) lands in a later release.",
            file=sys.stderr,
        )
        return 2
    return 0  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `torchscope` command line: one entry point with subcommands, plus the `trace-diff` alias.

Exit codes: 0 ok, 1 a regression or finding gate tripped, 2 bad input or usage.
Bad input is reported as one line naming the file and the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from typing import Iterator, Sequence

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.io.cache import CacheWarning

__all__ = ["main", "trace_diff_main", "EXIT_OK", "EXIT_GATE", "EXIT_BAD_INPUT"]

EXIT_OK = 0
EXIT_GATE = 1
EXIT_BAD_INPUT = 2

#: Each module defines ``register(subparsers)`` which adds its subcommand and sets ``func``
#: (``func(args) -> int`` exit code) on the parser's defaults.
COMMAND_MODULES: tuple[str, ...] = (
    "torchscope.cli.info",
    "torchscope.cli.analyze",
    "torchscope.cli.diff",
    "torchscope.cli.export",
    "torchscope.cli.dashboard",
    "torchscope.cli.demo",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = _Parser(prog="torchscope", description="Profile, analyze and compare PyTorch runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `torchscope` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return _run(args)


def trace_diff_main(argv: Sequence[str] | None = None) -> int:
    """`trace-diff BASE NEW ...`: the same as `torchscope diff BASE NEW ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["diff", *argv])


def _run(args: argparse.Namespace) -> int:
    try:
        with _one_line_cache_warnings():
            return int(args.func(args) or EXIT_OK)
    except TraceError as exc:
        sys.stderr.write(f"torchscope: error: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("torchscope: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `torchscope analyze x | head`
        return EXIT_OK


@contextlib.contextmanager
def _one_line_cache_warnings() -> Iterator[None]:
    """Cache warnings as one stderr line each (no source location); other warnings as Python shows them."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' API
            if issubclass(category, CacheWarning):
                sys.stderr.write(f"torchscope: warning: {message}\n")
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

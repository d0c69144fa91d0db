"""Standard output of the commands that print with rich."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: The width of a line at most when the output is no terminal.
PIPE_WIDTH = 10_000


def stdout_console(**kwargs: Any) -> Console:
    """A rich console on standard output: a terminal's width (or ``COLUMNS``); written to a
    file or a pipe, lines keep their natural width, so a path or a UID is never folded into
    pieces (at rich's default of 80 columns it was) and ``grep`` finds it whole."""
    from rich.console import Console

    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(width=PIPE_WIDTH if wide else None, **kwargs)


__all__ = ["PIPE_WIDTH", "stdout_console"]

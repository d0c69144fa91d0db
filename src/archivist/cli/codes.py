"""`archivist codes ...`: the terminology commands (placeholder until the terminology work lands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the terminology commands to the top-level CLI."""

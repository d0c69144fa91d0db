"""`archivist validate` and `archivist check-peer` (placeholder until the validation work lands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the validation commands to the top-level CLI."""

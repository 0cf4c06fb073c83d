"""The Typer options several `credit-jobs` commands share (`--database-url`, `--json`), as annotated types."""

from __future__ import annotations

from typing import Annotated

import typer

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL URL; overrides DATABASE_URL. Default: embedded PostgreSQL."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

"""Placeholder command group, replaced by the package's real commands."""

import typer

app = typer.Typer(no_args_is_help=True)

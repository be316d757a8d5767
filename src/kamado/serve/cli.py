"""Placeholder commands, replaced by the package's real ones."""


def serve() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


"""Placeholder commands, replaced by the package's real ones."""


def report() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


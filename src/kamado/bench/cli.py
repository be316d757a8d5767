"""Placeholder commands, replaced by the package's real ones."""


def bench() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


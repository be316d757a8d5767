"""Placeholder commands, replaced by the package's real ones."""


def evaluate() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


def judge() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


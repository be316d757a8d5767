"""Placeholder for the dedup / classifier commands (replaced by the dedup work)."""


def dedup() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


def train_classifier() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")

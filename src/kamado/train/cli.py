"""Placeholder commands, replaced by the package's real ones."""


def pretrain() -> None:
    """Not built yet."""
    raise SystemExit("not built yet")


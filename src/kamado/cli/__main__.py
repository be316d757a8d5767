"""``python -m kamado.cli``: the same as the ``kamado`` command."""

from kamado.cli import main

main()

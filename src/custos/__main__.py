"""``python -m custos``: the same as the ``custos`` command."""

from custos.cli import main

main()

"""``python -m tmstarget.cli``: the ``tmstarget`` command."""

from tmstarget.cli.main import console

console()

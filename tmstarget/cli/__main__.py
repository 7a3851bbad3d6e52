"""``python -m tmstarget.cli``: the ``tmstarget`` command."""

import sys

from tmstarget.cli.main import main

sys.exit(main())

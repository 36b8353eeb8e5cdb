"""``python -m mtbc_lib`` is the ``mtbc`` command."""

import sys

from mtbc_lib.cli import main

sys.exit(main())

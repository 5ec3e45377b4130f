"""``python -m pipelines.cli ...``: the same as the ``usage-rating`` command."""

import sys

from pipelines.cli import main

sys.exit(main())

"""``python -m navai_adapters serve ...``: the same as the ``navai`` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m migrate``: see :mod:`migrate.cli`."""

from __future__ import annotations

import sys

from migrate.cli import main

sys.exit(main())

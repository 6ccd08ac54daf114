"""``python -m shared.cli`` runs the ``aiorouter`` command (how ``aiorouter dev`` starts its children)."""

import sys

from shared.cli import main

sys.exit(main())

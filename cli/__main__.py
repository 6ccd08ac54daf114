"""``python -m cli`` runs the ``aiorouter`` command (how ``aiorouter dev`` starts its children)."""

import sys

from cli import main

sys.exit(main())

"""``python -m tidescope`` runs the command line."""

import sys

from tidescope.cli import main

sys.exit(main())

"""``python -m tgir`` runs the ``tgir`` command line."""

import sys

from tgir.cli import main

sys.exit(main())

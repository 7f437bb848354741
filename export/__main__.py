"""``python -m tgir.export`` runs the ``tgir-export`` command line (where the console script is not on
PATH, e.g. a package installed into an interpreter whose ``bin/`` is not)."""

import sys

from tgir.export.cli import main

sys.exit(main())

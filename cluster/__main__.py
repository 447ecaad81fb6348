"""``python -m cluster`` is ``bspump-cluster``."""

import sys

from cluster.cli import main

sys.exit(main())

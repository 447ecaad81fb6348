"""Entry point of the coordinator process (started by the supervisor)."""

import sys

from coordinator.main import main

sys.exit(main())

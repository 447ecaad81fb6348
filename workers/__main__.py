"""Entry point of a worker process (started by the supervisor)."""

import sys

from workers.runtime import main

sys.exit(main())

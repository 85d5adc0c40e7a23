"""`python -m bench` (`make bench`): see bench.run. Ctrl-C stops everything it started (exit 130)."""

import sys

from bench.report import say
from bench.run import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    say("interrupted; everything it started is stopped")
    sys.exit(130)

"""`python -m tests.chaos --transfers N --db postgresql|sqlite` (see tests/chaos/run.py)."""

import sys

from tests.chaos.run import main

sys.exit(main())

"""Shared test configuration: keep bitcoinlib and friends out of the user's home."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("BCL_DATA_DIR", tempfile.mkdtemp(prefix="paratro-bcl-"))

"""Suite-wide settings: no progress bars in test output."""

import os

os.environ["EDGECOMPRESS_QUIET"] = "1"

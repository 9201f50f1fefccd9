"""Suite-wide settings: no progress bars in test output, one intra-op thread.

The suite runs many tiny models; with one thread torch avoids the thread start-up and contention
that make small forwards slower than single-threaded ones on a 2-core machine.
"""

import os

os.environ["EDGECOMPRESS_QUIET"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads at import)

torch.set_num_threads(1)

"""Suite-wide settings: no progress bars in test output, one intra-op thread.

The suite runs many tiny models; with one thread torch avoids the thread start-up and contention
that make small forwards slower than single-threaded ones on a 2-core machine.
"""

import os

os.environ["EDGECOMPRESS_QUIET"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads at import)

torch.set_num_threads(1)

# The slowest files first: pytest-xdist's workers (`make test`) start on them and share the short files
# after, instead of one worker finishing a long file alone at the end.
SLOW_FILES_FIRST = ("tests/test_pipeline.py", "tests/test_pipeline_classify.py", "tests/tasks/test_anchor_free.py",
                    "tests/reliability/test_kill_and_resume.py", "tests/reliability/test_run_folders.py",
                    "tests/deploy/test_cpp_core.py", "tests/train/test_distributed.py")


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))

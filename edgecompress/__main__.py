"""``python -m edgecompress``: the command line, in the form torchrun starts it (``torchrun --nproc_per_node N -m edgecompress build ...``).

torchrun's ``record`` lets a process that dies of an exception name it in torchrun's failure summary.
"""

from torch.distributed.elastic.multiprocessing.errors import record

from .cli import main

record(main)()

"""``python -m edgecompress.profile MODEL --shape 1,3,64,64 ...``: the profiling worker (:func:`.worker.main`).

A module of its own so that running the worker never re-executes a module the package may already have
imported (``python -m edgecompress.profile.worker`` warns "found in sys.modules ... prior to execution" then).
"""

from .worker import main

main()

"""The one exception type for problems a user can fix (bad paths, bad data, unsupported models)."""


class EdgeCompressError(Exception):
    """A user-fixable problem. The message is one line: what is wrong and how to fix it.

    The CLI prints it without a traceback and exits with status 2.
    """

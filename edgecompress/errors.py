"""The one exception type for problems a user can fix (bad paths, bad data, unsupported models)."""


class EdgeCompressError(Exception):
    """A user-fixable problem. The message is one line: what is wrong and how to fix it.

    The CLI prints it without a traceback and exits with status 2.
    """


def describe(exc: BaseException) -> str:
    """``Type: first line of its message``: how a wrapped library exception appears in a one-line error."""
    message = str(exc)
    return f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"

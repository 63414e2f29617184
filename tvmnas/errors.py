"""The one error type the CLI turns into a one-line message and a non-zero exit."""


def error_line(err: BaseException) -> str:
    """An exception as one line ("Type: first line of its message"), for results and rows that carry errors."""
    return f"{type(err).__name__}: {err}".splitlines()[0]


class TvmnasError(Exception):
    """A problem with the user's input or environment; its message is one line naming the problem."""

"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class TvmnasError(Exception):
    """A problem with the user's input or environment; its message is one line naming the problem."""

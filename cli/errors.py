"""The error that a command raises to stop with ``alps: error: MESSAGE``."""


class CommandError(Exception):
    """A command failed; the message says what failed and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

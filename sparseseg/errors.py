"""The one exception type for bad input: the CLI turns it into a one-line message and exit code 2."""

from __future__ import annotations


def shown(value) -> str:
    """A value as a user would type it: ``(8, 16, 16)`` -> ``8,16,16``."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


class InputError(ValueError):
    """A problem with what the user gave (a file, an option, a value), not a bug in sparseseg.

    Parameters
    ----------
    message : str
        What is wrong, in the library's own terms.
    param : str, optional
        The library parameter at fault (e.g. ``'patch'``); the message then reads
        ``patch=8,16,16: message``, and the CLI names the flag instead (``--patch 8,16,16: message``).
    value : optional
        The bad value of ``param``.
    """

    def __init__(self, message: str, *, param: str | None = None, value=None):
        self.param, self.value, self.rule = param, value, message
        super().__init__(f"{param}={shown(value)}: {message}" if param else message)

    def named(self, name: str) -> str:
        """The message with ``param`` called ``name`` (e.g. a command-line flag)."""
        return f"{name} {shown(self.value)}: {self.rule}" if self.param else str(self)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) in a block-by-block run whose unfinished outputs were kept to be resumed.

    ``done`` blocks of ``total`` (None: not known) are written whole in the hidden ``folders``;
    the same run again with ``resume`` goes on from them.
    """

    def __init__(self, done: int, total: int | None, folders):
        self.done, self.total, self.folders = done, total, [str(f) for f in folders]
        super().__init__(f"{done} blocks kept in {', '.join(self.folders)}")

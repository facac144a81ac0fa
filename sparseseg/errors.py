"""The one exception type for bad input: the CLI turns it into a one-line message and exit code 2."""


class InputError(ValueError):
    """A problem with what the user gave (a file, an option, a value), not a bug in sparseseg."""

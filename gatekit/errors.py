"""The one exception type that the CLI turns into a one-line error and a non-zero exit."""


class GatekitError(Exception):
    """A user-facing error: bad input, a missing file, a corrupt checkpoint, an unknown name."""

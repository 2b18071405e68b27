"""User-facing errors: the CLI prints their message and exits with status 2, no traceback."""


class ZooError(Exception):
    """A problem with what the user asked for (bad model name, missing data, bad prompt...)."""

"""Errors users cause (bad input, missing files). The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad or missing input; the message names the file, column or key at fault."""


class DataError(UserError, ValueError):
    """A data file is missing, unreadable, or has a missing / mistyped / out-of-range column."""


class ServiceError(Exception):
    """A service the job needs (the MLflow tracking server) failed or cannot be reached; the
    message names it. The CLI prints one line and exits 1."""

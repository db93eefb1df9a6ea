"""Exceptions a user can cause, each with a one-line message.

Every message names where the problem is: the file, the record index, the
field or the parameter, and what was given against what was expected. The CLI
prints these as a single line (no traceback unless `--debug`).
"""


class KerasMREError(ValueError):
    """Base class of every user-facing error raised by keras-mre."""


class ConfigError(KerasMREError):
    """A hyper-parameter, config file or command-line option is invalid."""


class DataError(KerasMREError):
    """A data set, shard, record, pickle or media file is missing or invalid."""


class RunError(KerasMREError):
    """A run or export directory is missing, incomplete or not a run."""


class ServingError(KerasMREError):
    """A serving request or response does not match the model's signature."""

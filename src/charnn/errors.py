"""Exceptions charnn raises for problems a user can fix; the CLI prints them as one line."""


class CharnnError(Exception):
    """A problem with the user's input, files or settings, with a message saying what to do."""

    exit_code = 1


class DataError(CharnnError):
    """The corpus cannot be used: missing, empty, binary, badly encoded or too short."""


class ModelFileError(CharnnError):
    """A model or checkpoint on disk is missing, damaged or does not match its config."""


class ConfigError(CharnnError):
    """A setting is out of range or contradicts another one."""


class RunDirError(CharnnError):
    """The run folder cannot be used as asked (exists, locked, unwritable)."""


class TrainingError(CharnnError):
    """Training cannot go on (for example the loss became NaN)."""


class Stopped(KeyboardInterrupt):
    """Training was stopped by a signal: after saving a checkpoint, or at once by a second Ctrl-C. A
    KeyboardInterrupt, not an Exception: code that catches Exception around train() (a sweep, say) does not
    swallow the user's Ctrl-C; the command line prints it as one line with exit status 130 or 143."""

    def __init__(self, message: str, exit_code: int, quiet: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.quiet = quiet  # the command line prints nothing: under torchrun, the ranks that are not rank 0


# What every command that runs a model says of one whose weights hold NaN or inf values.
NOT_FINITE = (
    "the model's outputs are not finite numbers (its weights hold NaN or inf values): use another model, "
    "or train again"
)

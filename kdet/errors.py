"""Exceptions kdet raises for bad user input (the CLI prints them as one line)."""


class KdetError(ValueError):
    """A user-facing error: bad argument, unknown name, bad file. Message is one line."""

    # AutoGraph re-raises an error from traced code under its own type only when that type's
    # __init__ is Exception.__init__ (or a builtin it lists); otherwise callers of a
    # tf.function / Keras fit would get a StagingError instead of a KdetError.
    __init__ = Exception.__init__


class CheckpointError(KdetError):
    """A checkpoint file is corrupt, truncated, unsafe or of another architecture."""

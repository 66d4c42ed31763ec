"""Exceptions kdet raises for bad user input (the CLI prints them as one line)."""


class KdetError(ValueError):
    """A user-facing error: bad argument, unknown name, bad file. Message is one line."""


class CheckpointError(KdetError):
    """A checkpoint file is corrupt, truncated, unsafe or of another architecture."""

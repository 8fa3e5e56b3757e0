"""Errors a run reports to the commands (each maps to an exit code in `cli`)."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf."""


class RunWriteError(RuntimeError):
    """A file of the run directory could not be written (e.g. the disk is full)."""

"""Errors a user can cause. Their message says what is wrong, where, and how to fix it."""


class MlaasError(Exception):
    """Base of errors the CLI prints as one clear message instead of a traceback."""


class SettingsError(MlaasError):
    """params.yaml is missing, malformed or names something unknown."""


class DataError(MlaasError):
    """The data source cannot be read or has the wrong shape."""


class ValidationFailed(MlaasError):
    """The data set failed the validation gate; nothing downstream may run."""


class NotReady(MlaasError):
    """A stage needs the output of an earlier one that has not run yet."""


class TrainingInterrupted(MlaasError):
    """The training process died from outside (a signal: out of memory, preempted, killed).

    Its checkpoints are kept: training again with the same data and settings resumes from them.
    """


class TrackingStoreUnavailable(MlaasError):
    """MLflow's tracking store (runs and model registry) cannot be read or written."""

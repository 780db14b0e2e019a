"""Errors a user can cause. Their message says what is wrong, where, and how to fix it.

Every one lives here, so that a process which gets only an error's class name (the training
process's outcome) can raise the very same class again.
"""


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


class StoreUnavailable(MlaasError):
    """A server or database the platform keeps its state in cannot be reached or used."""


class TrackingStoreUnavailable(StoreUnavailable):
    """MLflow's tracking store (runs and model registry) cannot be read or written."""


class LockTimeout(MlaasError):
    """Another mlaas process held a lock for longer than this one would wait."""


class TamperedModel(MlaasError):
    """A model's files no longer match the hash recorded when it was registered."""


class UntrustedModel(MlaasError):
    """A model file holds types that loading it would have to trust blindly."""


def error_class_named(name: str) -> type[MlaasError]:
    """The error class of this module called `name`; `MlaasError` for a name it does not define."""
    # Looked up here only: a name read from a file must never choose an arbitrary class to build.
    candidate = globals().get(name)
    if isinstance(candidate, type) and issubclass(candidate, MlaasError):
        return candidate
    return MlaasError


class PartFailed(MlaasError):
    """A part of the platform (`mlaas up`) exited or did not answer in time; the message ends
    with the end of its log."""


class NotFound(MlaasError):
    """A pipeline, run, data set or model version that does not exist was asked for."""


class Conflict(MlaasError):
    """What was asked clashes with what exists (a pipeline name or a port already taken)."""


class TooLarge(MlaasError):
    """An upload is larger than the platform accepts."""


class PrefectUnavailable(StoreUnavailable):
    """The platform's Prefect server does not answer (not started, or stopped)."""


class TrialWasPruned(MlaasError):
    """A search's trial stopped by its pruner after an epoch: an outcome of the search, not a
    failure (here so that the training process's parent raises the same class again)."""

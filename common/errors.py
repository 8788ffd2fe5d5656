"""Every error digitq raises on purpose, in one place.

Each carries a one-line message meant for a person; the CLI prints it and exits non-zero.

The exit-code rule (README "Exit codes"): 2 when the command line or the environment is wrong and
nothing was done (a usage error: a bad option, an unknown model, a bad DIGITQ_* setting); 1 when
it was tried and failed (a broker that cannot be reached, a job that failed); 130 after Ctrl-C.
"""


class DigitqError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 1


class InvalidRequest(DigitqError):
    """A job's parameters are missing, of the wrong type or out of range."""

    exit_code = 2


class ConfigError(DigitqError):
    """A DIGITQ_* setting is malformed (a broker URL that is not one, a DIGITQ_HOME that is a file)."""

    exit_code = 2


class InvalidResult(DigitqError):
    """A worker's result does not have the shape this client reads (a bug, or a foreign worker)."""


class DataError(DigitqError):
    """Training or test data is missing, corrupt or cannot be fetched."""


class ImageError(DigitqError):
    """An image file cannot be turned into a digit; the message says why, in one line."""


class NoInkError(ImageError):
    """The image was read but holds nothing that looks like a digit (blank paper, only ruled
    lines, shading or specks). `digitq predict` gives it a row with the flag `blank`, not an error."""


class BrokerUnavailable(DigitqError):
    """The Redis broker cannot be reached."""


class NoWorker(DigitqError):
    """No live worker has served a queue that a wait depends on for DIGITQ_NO_WORKER_TIMEOUT seconds."""


class JobVanished(DigitqError):
    """A job or chunk being waited for is gone from Redis (it restarted empty, or a failover lost writes)."""


class BrokerFull(DigitqError):
    """Redis refused a write: maxmemory reached with maxmemory-policy noeviction."""


class NoSuchJob(DigitqError):
    """No job with that id is known to the broker."""

    exit_code = 2


class JobFailed(DigitqError):
    """A job ended in FAILURE; the message is the worker's reason."""


class JobCancelled(DigitqError):
    """A job was cancelled by `digitq cancel`."""


class JobAlreadyFinished(DigitqError):
    """`digitq cancel` of a job that already succeeded or failed: nothing was cancelled."""


class LocalStackError(DigitqError):
    """The embedded redis-server or worker could not be started or stopped."""


class PathNotAllowed(DigitqError):
    """A path from a job message resolves outside the worker's allowed roots, or does not exist."""

    exit_code = 2


class NoSuchModel(DigitqError):
    """No registered model matches NAME[:VERSION]."""

    exit_code = 2


class WorkerNotInstalled(DigitqError):
    """The worker extra (TensorFlow) is not installed in this environment."""


class LeaseLost(DigitqError):
    """This worker no longer holds the job's lease (paused or cut off past its TTL, and another
    worker took the job over): it stops and writes nothing more for the job."""


class JobHandedBack(DigitqError):
    """The worker is stopping (SIGTERM, Ctrl-C): the job saved a backup and goes back to its queue
    at once (Celery's requeue); its lease is released and its running record kept, so the
    takeover sweep re-publishes it should that message be lost (digitq.worker.watchdog)."""


class EnsembleMemberFailed(DigitqError):
    """A member job of a fanned-out ensemble failed: the ensemble fails with it (common/ensemble.py)."""

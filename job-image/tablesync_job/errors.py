"""The job's one exception family, and the exit codes it maps to.

Raised by every module of the job; caught once, in ``__main__``, which prints the message as
a single line (no stack trace) and exits with ``exit_code``. Contract: job-image/README.md.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INPUT = 2  # bad input or configuration: fixing the input is needed, a retry will not help
EXIT_GUARD = 3  # a guard refused the delta: approve it or investigate the source
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: a retry may help

# What every message that suggests starting over says: the bootstrap upserts and deletes nothing
# (DESIGN.md section 4), so it is not a full resync.
START_OVER = ("to start over, delete state.json under spec.storage.url: the next run bootstraps, "
              "upserting every row of the source, and deletes nothing (a row deleted at the "
              "source since the last applied snapshot stays in the destination until removed "
              "there)")


class TableSyncError(Exception):
    """Base of the family. ``message`` is one line that names what is wrong and what to do."""

    exit_code = EXIT_TRANSIENT
    reason = "TransientError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(TableSyncError):
    """The spec, a variable, a table or a bucket is wrong; the user must fix it."""

    exit_code = EXIT_INPUT
    reason = "InputError"


class TransientError(TableSyncError):
    """A failure a retry may cure: a network error, a restarting server, a lock conflict."""

    exit_code = EXIT_TRANSIENT
    reason = "TransientError"


class GuardTripped(TableSyncError):
    """A guard refused the delta; nothing was applied and the state did not advance.

    ``delta_id`` (``FROM..TO``) is what an operator passes to ``--approve`` to apply it anyway.
    ``finding`` is what the guard saw, without the advice (a dry run reports it as is).
    """

    exit_code = EXIT_GUARD

    def __init__(self, message: str, *, reason: str, delta_id: str, finding: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.delta_id = delta_id
        self.finding = finding

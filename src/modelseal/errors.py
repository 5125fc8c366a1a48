"""The exceptions modelseal raises.

Library functions raise; only the CLI turns these into exit codes:
an `IntegrityError` (the model or its seal is not trustworthy) exits 1,
any other `Error` (bad arguments, unreadable inputs) exits 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelseal.verification import Failure


class Error(Exception):
    """Root of every error modelseal raises on purpose."""

    def diagnostics(self) -> str:
        """A human explanation, possibly over several lines."""
        return str(self)


class UsageError(Error):
    """The caller asked for something impossible: bad arguments, a missing key file."""


class IntegrityError(Error):
    """Verification failed: what is on disk is not what was sealed by a trusted key.

    `failure` carries the full report (every finding, digests, signer) when
    the verification got far enough to produce one.
    """

    def __init__(self, message: str, failure: Failure | None = None) -> None:
        super().__init__(message)
        self.failure = failure

    def diagnostics(self) -> str:
        if self.failure is None:
            return str(self)
        return self.failure.describe()


class SealError(IntegrityError):
    """The seal file is missing, too large, or not a well-formed OMS v1.0 seal."""


class SignatureError(IntegrityError):
    """No signature on the seal verifies with a trusted key."""


class ModelMismatchError(IntegrityError):
    """Files on disk differ from the sealed manifest (changed, missing, extra, unreadable)."""


class UnsafeModelError(IntegrityError):
    """The model tree holds something modelseal refuses to hash or trust.

    Symlinks (unless allowed, and never out of the model root), FIFOs,
    devices, sockets, names that cannot be represented safely, an empty model.
    `name` is the offending path relative to the model root, when there is one.
    """

    def __init__(self, message: str, failure: Failure | None = None, *, name: str | None = None):
        super().__init__(message, failure)
        self.name = name

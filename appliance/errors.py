"""One error hierarchy for the whole appliance, translated once at each edge.

    ApplianceError
    ├── ConfigError            a setting is unknown or has a value of the wrong kind
    ├── LoginThrottledError    too many failed logins from this client (or for this account
    │                          from many clients): wait ``retry_after`` seconds (logins/throttle.py)
    ├── StoreError             the data directory or its database cannot do what was asked
    │   └── StorageFullError   not enough free disk to store safely
    ├── IngestError            an incoming file cannot be accepted
    │   ├── UnsupportedFileError   not an image the box can screen (PDF, SR, text...)
    │   ├── FileTooLargeError      more bytes than ``upload_max_mb`` (found while reading)
    │   └── DecodeError            an image whose pixels cannot be read
    └── BundleError            a model bundle is missing, corrupt or inconsistent
        ├── BundleNotFoundError    no bundle where one was expected (inference/bundle.py)
        ├── ManifestError          manifest.json missing fields or malformed
        ├── BundleIntegrityError   a file's sha256 differs from the manifest
        ├── EngineBuildError       a TensorRT engine cannot be built (inference/tensorrt_build.py)
        │   └── TensorRTUnavailableError   tensorrt/pycuda not installed or no GPU
        ├── ModelPackageError      a signed bundle file is refused: unsigned, untrusted key,
        │                          tampered, wrong contract or appliance version (lifecycle/)
        └── ModelStateError        a version cannot be activated or rolled back (lifecycle/)
    └── SyncError              results cannot reach the hub now (appliance/sync, appliance/hub)
        ├── NotEnrolledError       no hub URL or device token: run `appliance sync enrol`
        ├── HubUnreachableError    no answer, timeout, broken connection or 5xx: retry later
        │   └── HubBusyError       the hub said when to come back (503/429 + Retry-After)
        ├── HubCertificateError    the hub's HTTPS certificate does not verify
        ├── HubAuthError           the hub refused this device (401 unknown, 403 revoked)
        ├── HubRejectedError       the hub refused a request as malformed (400)
        ├── EnrolmentError         an enrolment code is unknown, used or expired (hub side)
        ├── HubDatabaseError       the hub's database cannot be opened or written (hub side)
        └── MuleBundleError        a data-mule bundle is unreadable, tampered or unsigned
    └── PacsError              DICOM results cannot reach a PACS, or the worklist cannot be read
        ├── PacsUnreachableError   no association (refused, timeout, aborted): retry later
        └── PacsRejectedError      the PACS answered a C-STORE with a failure status

The CLI turns these into ``click.ClickException``, the web layer into one JSON error
shape, and the DICOM layer into C-STORE status codes. ``IngestError.reason`` is written
for a nurse: short, plain, and saying what to do where there is something to do.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A setting is unknown or its value cannot be used."""


class LoginThrottledError(ApplianceError):
    """Too many failed logins: this attempt is refused unchecked for ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after:.0f} seconds")
        self.retry_after = retry_after


class StoreError(ApplianceError):
    """The data directory or database cannot complete the operation."""


class StorageFullError(StoreError):
    """Too little free disk space to store another file safely."""


class IngestError(ApplianceError):
    """An incoming file cannot be accepted; ``reason`` says why in plain words."""

    def __init__(self, reason: str, *, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class UnsupportedFileError(IngestError):
    """The file is not an image the box can screen."""


class FileTooLargeError(IngestError):
    """The file is larger than the limit for one image."""


class DecodeError(IngestError):
    """The file claims to be an image but its pixels cannot be read."""


class BundleError(ApplianceError):
    """A model bundle is missing, corrupt or inconsistent."""


class ModelPackageError(BundleError):
    """A signed model bundle file is refused; the message says why."""


class ModelStateError(BundleError):
    """A model version cannot be activated, rolled back or found as asked."""


class SyncError(ApplianceError):
    """Results cannot reach the hub now."""


class NotEnrolledError(SyncError):
    """No hub URL or device token: the box is not enrolled with a hub."""


class HubUnreachableError(SyncError):
    """The hub did not answer usefully (network, timeout, 5xx): try again later."""


class HubBusyError(HubUnreachableError):
    """The hub is shedding load and said when to come back: ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HubCertificateError(SyncError):
    """The hub's HTTPS certificate cannot be verified."""


class HubAuthError(SyncError):
    """The hub does not accept this device (unknown token or revoked)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class HubRejectedError(SyncError):
    """The hub refused a request as malformed."""


class EnrolmentError(SyncError):
    """An enrolment code is unknown, already used or expired."""


class MuleBundleError(SyncError):
    """A data-mule bundle is unreadable, tampered with, or from an unknown device."""


class HubDatabaseError(SyncError):
    """The hub's database cannot be opened or written."""


class PacsError(ApplianceError):
    """DICOM results cannot reach a PACS, or the modality worklist cannot be read."""


class PacsUnreachableError(PacsError):
    """No association with the PACS or worklist (refused, timed out, aborted): retry later."""


class PacsRejectedError(PacsError):
    """The PACS answered a C-STORE with a failure status."""

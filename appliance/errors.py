"""One error hierarchy for the whole appliance, translated once at each edge.

    ApplianceError
    ├── ConfigError            a setting is unknown or has a value of the wrong kind
    ├── StoreError             the data directory or its database cannot do what was asked
    │   └── StorageFullError   not enough free disk to store safely
    ├── IngestError            an incoming file cannot be accepted
    │   ├── UnsupportedFileError   not an image the box can screen (PDF, SR, text...)
    │   └── DecodeError            an image whose pixels cannot be read
    └── BundleError            a model bundle is missing, corrupt or inconsistent
        ├── BundleNotFoundError    no bundle where one was expected (inference/bundle.py)
        ├── ManifestError          manifest.json missing fields or malformed
        ├── BundleIntegrityError   a file's sha256 differs from the manifest
        └── EngineBuildError       a TensorRT engine cannot be built (inference/tensorrt_build.py)
            └── TensorRTUnavailableError   tensorrt/pycuda not installed or no GPU

The CLI turns these into ``click.ClickException``, the web layer into one JSON error
shape, and the DICOM layer into C-STORE status codes. ``IngestError.reason`` is written
for a nurse: short, plain, and saying what to do where there is something to do.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A setting is unknown or its value cannot be used."""


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


class DecodeError(IngestError):
    """The file claims to be an image but its pixels cannot be read."""


class BundleError(ApplianceError):
    """A model bundle is missing, corrupt or inconsistent."""

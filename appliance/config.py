"""Settings: code defaults -> ``DATA_DIR/config.toml`` -> ``APPLIANCE_*`` environment.

Every setting is declared once in ``SETTINGS`` with its type and a one-line meaning, and
documented once in ``docs/configuration.md`` (a test fails when the two disagree).
Command-line flags such as ``serve --port`` override the result for that run only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "APPLIANCE_"
CONFIG_FILE = "config.toml"


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type  # str, int, float, bool or list (of str)
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address the web page listens on."),
    Setting("port", int, 8080, "TCP port of the web page."),
    Setting("dicom_port", int, 11112, "TCP port of the DICOM listener (C-ECHO, C-STORE)."),
    Setting(
        "dicom_host",
        str,
        "0.0.0.0",
        "Address the DICOM listener binds to (0.0.0.0: every network interface).",
    ),
    Setting("dicom_aet", str, "APPLIANCE", "AE title the DICOM listener answers to."),
    Setting(
        "dicom_allowed_aets",
        list,
        [],
        "Calling AE titles allowed to send; empty allows any.",
    ),
    Setting("dicom_enabled", bool, True, "Run the DICOM listener in `appliance serve`."),
    Setting(
        "usb_roots",
        list,
        ["/media", "/run/media", "/mnt"],
        "Folders under which removable media are mounted.",
    ),
    Setting(
        "usb_require_mountpoint",
        bool,
        True,
        "Only treat real mount points under `usb_roots` as volumes (off: every sub-folder).",
    ),
    Setting("usb_auto_import", bool, True, "Import every image on a newly seen volume."),
    Setting("usb_poll_seconds", float, 2.0, "How often to look for newly mounted volumes."),
    Setting("hot_folder", str, "", "Folder watched for new files; empty disables it."),
    Setting("hot_folder_poll_seconds", float, 2.0, "How often the hot folder is scanned."),
    Setting(
        "hot_folder_settle_seconds",
        float,
        2.0,
        "A file must be unchanged this long before it is imported (still being copied).",
    ),
    Setting(
        "upload_max_mb",
        int,
        512,
        "Largest file accepted through any door (upload, DICOM, USB, hot folder, ingest).",
    ),
    Setting(
        "max_image_pixels",
        int,
        100_000_000,
        "Images whose own headers declare more pixels than this are refused before decoding.",
    ),
    Setting("max_image_frames", int, 1000, "DICOM files declaring more frames are refused."),
    Setting(
        "max_decode_mb",
        int,
        600,
        "Most memory decoding one image may take, estimated from its headers; a larger "
        "image is refused as too large to process safely.",
    ),
    Setting(
        "decode_retry_memory_mb",
        int,
        1536,
        "An image whose decoding stopped the box is read again only in a separate process "
        "limited to this much memory; if that fails it is quarantined.",
    ),
    Setting(
        "min_free_mb",
        int,
        200,
        "Free disk kept in reserve; below it new images are refused (DICOM status A700).",
    ),
    Setting("workers", int, 1, "Number of background workers processing the job queue."),
    Setting("job_lease_seconds", float, 120.0, "A claimed job is re-offered after this long."),
    Setting("job_max_attempts", int, 3, "Attempts before a job is marked failed."),
    Setting("preview_max_px", int, 1024, "Longest side of the stored preview image."),
    Setting(
        "models_dir",
        str,
        "",
        "Folder of model bundles (`<name>/<version>/`); empty uses the bundled models.",
    ),
    Setting(
        "inference_backend",
        str,
        "auto",
        "auto (TensorRT where usable, else ONNX Runtime), onnxruntime or tensorrt.",
    ),
    Setting("inference_threads", int, 0, "CPU threads per model for ONNX Runtime; 0 = all cores."),
    Setting("model_precision", str, "int8", "Model file to serve: int8 (default) or fp32."),
    Setting(
        "cxr_threshold",
        float,
        0.0,
        "Chest X-ray operating point (probability); 0 uses the bundle's suggested one.",
    ),
    Setting(
        "fundus_threshold",
        float,
        0.0,
        "Fundus operating point (probability); 0 uses the bundle's suggested one.",
    ),
    Setting(
        "router_min_confidence",
        float,
        0.0,
        "Least router confidence to route an image; 0 uses the bundle's suggested one.",
    ),
    Setting(
        "urgent_min_specificity",
        float,
        0.95,
        "A score at or above the threshold with this validation specificity is urgent.",
    ),
    Setting(
        "power_mode",
        str,
        "",
        "Jetson power mode applied at boot: an nvpmodel mode ID or name; empty keeps the board's.",
    ),
    Setting("log_level", str, "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR."),
    Setting(
        "site_name", str, "Clinic", "The clinic's name, shown on every page and referral slip."
    ),
    Setting("language", str, "en", "Language for the login page and new users: en, fr or pt."),
    Setting("timezone", str, "UTC", "Time zone for dates on pages and slips, e.g. Africa/Maputo."),
    Setting("session_idle_minutes", int, 30, "Minutes without use before a login expires."),
    Setting(
        "secure_cookies",
        bool,
        False,
        "Send the session cookie over HTTPS only (turn on when the page is served by HTTPS).",
    ),
    Setting(
        "sync_hub_url",
        str,
        "",
        "Base URL of the central hub (https://...); empty: no sync. Set by `appliance sync enrol`.",
    ),
    Setting(
        "sync_ca_bundle",
        str,
        "",
        "PEM file of CA certificates to verify the hub's HTTPS certificate; empty: system CAs.",
    ),
    Setting("sync_interval_seconds", float, 60.0, "Pause between sync passes once all is sent."),
    Setting("sync_batch_size", int, 200, "Results or reviews sent per request."),
    Setting(
        "sync_max_kbps",
        int,
        0,
        "Most kilobits per second sync may use on average; 0 = no limit.",
    ),
    Setting("sync_timeout_seconds", float, 30.0, "Network timeout of one request to the hub."),
    Setting(
        "sync_retry_min_seconds",
        float,
        5.0,
        "First wait after a failed request; doubles (with jitter) on each failure.",
    ),
    Setting("sync_retry_max_seconds", float, 900.0, "Longest wait between retries after failures."),
    Setting(
        "sync_images",
        bool,
        False,
        "Also send the original images (after all results), in resumable chunks.",
    ),
    Setting("sync_image_chunk_kb", int, 1024, "Size of one image chunk sent to the hub."),
    Setting(
        "sync_deidentify",
        bool,
        False,
        "Replace patient name, IDs and UIDs by keyed hashes before sync (images not sent).",
    ),
    Setting(
        "hub_database_url",
        str,
        "",
        "Hub only: postgresql://... database; empty: SQLite `hub.db` in the hub's data dir.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass
class Config:
    data_dir: Path
    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def with_overrides(self, **overrides: Any) -> Config:
        values = dict(self.values)
        for name, value in overrides.items():
            if value is None:
                continue
            values[name] = _coerce(_setting(name), value, "override")
        return Config(self.data_dir, values)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "appliance.db"


def _setting(name: str) -> Setting:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown setting {name!r}") from None


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    kind = setting.kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if kind is list:
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            return [str(v) for v in value]
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {setting.name!r} from {source}: {value!r} is not a valid {kind.__name__}"
        ) from None


def load_config(
    data_dir: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Read the layered settings for ``data_dir`` (which need not exist yet)."""
    data_dir = Path(data_dir).resolve()
    environ = os.environ if environ is None else environ
    values = {s.name: s.default for s in SETTINGS}

    config_file = data_dir / CONFIG_FILE
    if config_file.exists():
        try:
            from_file = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}") from exc
        for name, value in from_file.items():
            values[name] = _coerce(_setting(name), value, str(config_file))

    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == "APPLIANCE_DATA_DIR":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        values[name] = _coerce(_setting(name), value, f"environment {key}")

    return Config(data_dir, values).with_overrides(**overrides)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(str(v)) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def save_settings(
    config: Config, updates: dict[str, Any], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Write ``updates`` into ``DATA_DIR/config.toml`` (atomically) and apply them to
    ``config`` in place. Returns the names the environment overrides (not applied live).
    """
    environ = os.environ if environ is None else environ
    coerced = {
        name: _coerce(_setting(name), value, "settings page") for name, value in updates.items()
    }
    path = config.data_dir / CONFIG_FILE
    current: dict[str, Any] = {}
    if path.exists():
        current = tomllib.loads(path.read_text(encoding="utf-8"))
    current.update(coerced)
    text = "".join(f"{name} = {_toml_value(value)}\n" for name, value in sorted(current.items()))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    overridden = [name for name in coerced if ENV_PREFIX + name.upper() in environ]
    for name, value in coerced.items():
        if name not in overridden:
            config.values[name] = value
    return overridden

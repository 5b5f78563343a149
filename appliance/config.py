"""Settings: code defaults -> ``DATA_DIR/config.toml`` -> ``APPLIANCE_*`` environment.

Every setting is declared once in ``SETTINGS`` with its type, the values it may take and
a one-line meaning, and documented once in ``docs/configuration.md`` (a test fails when
the two disagree). Command-line flags such as ``serve --port`` override the result for
that run only.

Every value is checked in one place, ``_coerce``, whichever layer it comes from: the
Settings page, ``config.toml`` at start-up, the environment and the flags. A bad value
in ``config.toml`` or the environment stops start-up with a ``ConfigError`` naming the
setting, where it came from and what it may be, rather than falling back to the default
with a warning: a technician edits the file by hand and is there to read the message,
and a silent fallback can be the unsafe choice (a mistyped ``sync_deidentify`` would
send patient names to the hub, a mistyped ``secure_cookies`` would send the session over
plain HTTP). ``save_settings`` writes only what the loader reads back.

Why this is long: the ``SETTINGS`` table is every setting with its type, default,
meaning and check, in one place (a split would put half a setting somewhere else).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "APPLIANCE_"
CONFIG_FILE = "config.toml"

# A check takes the coerced value and returns what is wrong with it, or None.
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type  # str, int, float, bool or list (of str)
    default: Any
    help: str
    check: Check | None = None


# -- checks ------------------------------------------------------------------------
def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A number from ``low`` to ``high`` (either end excluded when ``*_open``)."""

    def check(value: float) -> str | None:
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            return f"must be in {left}{_number(low)}, {_number(high)}{right}"
        return None

    return check


def positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


def one_of(*choices: str, case: bool = True) -> Check:
    def check(value: str) -> str | None:
        given = value if case else value.upper()
        return None if given in choices else "must be one of " + ", ".join(choices)

    return check


def text(max_length: int, *, required: bool = False) -> Check:
    def check(value: str) -> str | None:
        if required and not value.strip():
            return "must not be empty"
        if len(value) > max_length:
            return f"must be at most {max_length} characters"
        return None

    return check


# DICOM PS3.5 AE: 1-16 characters of the default repertoire, no backslash, not all spaces.
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def ae_title(value: str) -> str | None:
    if not AE_TITLE.match(value) or not value.strip():
        return "must be 1 to 16 letters, digits or spaces (no backslash)"
    return None


def ae_titles(values: list[str]) -> str | None:
    problems = [v for v in values if ae_title(v)]
    return f"{problems[0]!r} {ae_title(problems[0])}" if problems else None


LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")


def host(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    return None if HOSTNAME.match(value) else "must be an IP address or a host name"


# ``AET@host:port`` with an optional ``:sr`` or ``:sc`` (appliance/pacs/targets.py parses it).
PACS_ADDRESS = re.compile(
    r"^(?P<aet>[^@\\]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})(:(sr|sc))?$"
)


def pacs_addresses(values: list[str]) -> str | None:
    for value in values:
        found = PACS_ADDRESS.match(value)
        if not found or ae_title(found["aet"]) or host(found["host"]):
            return f"{value!r} is not AET@host:port (optionally :sr or :sc)"
        if not 1 <= int(found["port"]) <= 65535:
            return f"{value!r}: the port must be 1 to 65535"
    return None


def networks(values: list[str]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP address or network (such as 10.0.0.0/8)"
    return None


def time_zone(value: str) -> str | None:
    """A name both zoneinfo (the worklist's "today") and pytz (Flask-Babel) know."""
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(value)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return "must be a time zone name such as Africa/Maputo or UTC"
    try:
        import pytz
    except ImportError:  # pragma: no cover - Flask-Babel needs it; the CLI does not
        return None
    try:
        pytz.timezone(value)
    except pytz.UnknownTimeZoneError:
        return "must be a time zone name such as Africa/Maputo or UTC"
    return None


def url(*schemes: str, empty: bool = True) -> Check:
    def check(value: str) -> str | None:
        if not value and empty:
            return None
        parts = urlsplit(value)
        if parts.scheme in schemes and (parts.netloc or parts.scheme == "sqlite"):
            return None
        return "must be empty or a URL starting with " + " or ".join(f"{s}://" for s in schemes)

    return check


def hub_database(value: str) -> str | None:
    if value in ("", "sqlite"):
        return None
    return url("postgresql", "postgres", "sqlite", empty=False)(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address the web page listens on.", host),
    Setting("port", int, 8080, "TCP port of the web page.", between(1, 65535)),
    Setting(
        "dicom_port",
        int,
        11112,
        "TCP port of the DICOM listener (C-ECHO, C-STORE).",
        between(1, 65535),
    ),
    Setting(
        "dicom_host",
        str,
        "0.0.0.0",
        "Address the DICOM listener binds to (0.0.0.0: every network interface).",
        host,
    ),
    Setting("dicom_aet", str, "APPLIANCE", "AE title the DICOM listener answers to.", ae_title),
    Setting(
        "dicom_allowed_aets",
        list,
        [],
        "Calling AE titles allowed to send; empty allows any.",
        ae_titles,
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
    Setting(
        "usb_poll_seconds", float, 2.0, "How often to look for newly mounted volumes.", positive
    ),
    Setting("hot_folder", str, "", "Folder watched for new files; empty disables it."),
    Setting(
        "hot_folder_poll_seconds", float, 2.0, "How often the hot folder is scanned.", positive
    ),
    Setting(
        "hot_folder_settle_seconds",
        float,
        2.0,
        "A file must be unchanged this long before it is imported (still being copied).",
        between(0, 86400),
    ),
    Setting(
        "upload_max_mb",
        int,
        512,
        "Largest file accepted through any door (upload, DICOM, USB, hot folder, ingest).",
        between(1, 65536),
    ),
    Setting(
        "max_image_pixels",
        int,
        100_000_000,
        "Images whose own headers declare more pixels than this are refused before decoding.",
        between(1, 10**10),
    ),
    Setting(
        "max_image_frames",
        int,
        1000,
        "DICOM files declaring more frames are refused.",
        between(1, 100_000),
    ),
    Setting(
        "max_decode_mb",
        int,
        600,
        "Most memory decoding one image may take, estimated from its headers; a larger "
        "image is refused as too large to process safely.",
        between(16, 65536),
    ),
    Setting(
        "decode_retry_memory_mb",
        int,
        1536,
        "An image whose decoding stopped the box is read again only in a separate process "
        "limited to this much memory; if that fails it is quarantined.",
        between(256, 65536),
    ),
    Setting(
        "min_free_mb",
        int,
        200,
        "Free disk kept in reserve; below it new images are refused (DICOM status A700) and "
        "screening waits; previews and heatmaps are never written into it.",
        between(0, 10**9),
    ),
    Setting(
        "workers",
        int,
        2,
        "Number of background workers processing the job queue (two images at once: on "
        "2 cores, 2 workers of 1 ONNX Runtime thread each screened the most per second).",
        between(1, 64),
    ),
    Setting(
        "job_lease_seconds",
        float,
        120.0,
        "A claimed job is re-offered after this long.",
        positive,
    ),
    Setting(
        "job_max_attempts",
        int,
        3,
        "Attempts before a job is marked failed (a full disk spends none).",
        between(1, 100),
    ),
    Setting(
        "preview_max_px",
        int,
        1024,
        "Longest side of the stored preview image.",
        between(16, 16384),
    ),
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
        one_of("auto", "onnxruntime", "tensorrt"),
    ),
    Setting(
        "inference_threads",
        int,
        1,
        "CPU threads per model for ONNX Runtime; 0 = all cores (the workers already "
        "screen images side by side).",
        between(0, 1024),
    ),
    Setting(
        "model_precision",
        str,
        "int8",
        "Model file to serve: int8 (default) or fp32.",
        one_of("int8", "fp32"),
    ),
    Setting(
        "chest_population",
        str,
        "adult",
        "Chest X-rays without a patient age (JPEG, PNG, DICOM without one): screened as "
        "adult or child, or ask (they wait until staff choose on the study page).",
        one_of("adult", "child", "ask"),  # screening.population.SITE_CHOICES
    ),
    Setting(
        "training_consent",
        str,
        "never",
        "May this box's confirmed images leave it to improve the models (`appliance training"
        " export`)? never (the default), ask (staff record each patient's yes or no on the"
        " study page) or always (a national approval covers it).",
        one_of("never", "ask", "always"),  # store.consent.POLICIES
    ),
    Setting(
        "training_sync",
        bool,
        False,
        "May this box send its training exports to its hub with sync (resumable chunks,"
        " paced to `sync_max_kbps`): by `appliance training send`, and by the sync worker"
        " after the results of each pass? Off (the default): they leave only on a USB"
        " stick (`appliance training export --to`).",
    ),
    Setting(
        "visit_gap_minutes",
        float,
        5.0,
        "Photos from one source (a USB stick or camera card, one upload, one DICOM sender) "
        "taken at most this many minutes apart are one visit: one patient entry can cover "
        "them all; 0 turns visits off.",
        between(0, 240),
    ),
    Setting(
        "cxr_threshold",
        float,
        0.0,
        "Children's chest X-ray (cxr-pneumonia) operating point (probability); 0 uses the "
        "bundle's suggested one.",
        between(0, 1, high_open=True),
    ),
    Setting(
        "cxr_adult_threshold",
        float,
        0.0,
        "Adults' chest X-ray (cxr-adult-abnormal) operating point (probability); 0 uses the "
        "bundle's suggested one.",
        between(0, 1, high_open=True),
    ),
    Setting(
        "fundus_threshold",
        float,
        0.0,
        "Fundus operating point (probability); 0 uses the bundle's suggested one.",
        between(0, 1, high_open=True),
    ),
    Setting(
        "router_min_confidence",
        float,
        0.0,
        "Least router confidence to route an image; 0 uses the bundle's suggested one.",
        between(0, 1),
    ),
    Setting(
        "urgent_min_specificity",
        float,
        0.95,
        "A score at or above the threshold with this validation specificity is urgent.",
        between(0, 1),
    ),
    Setting(
        "calibration_min_positives",
        int,
        30,
        "Fewest confirmed positives before `appliance calibrate` recommends a threshold.",
        between(5, 100_000),
    ),
    Setting(
        "calibration_min_negatives",
        int,
        30,
        "Fewest confirmed negatives before `appliance calibrate` recommends a threshold.",
        between(5, 100_000),
    ),
    Setting(
        "outcome_match_days",
        int,
        14,
        "An outcome imported by patient ID and date matches that patient's images taken "
        "this many days before or after.",
        between(0, 365),
    ),
    Setting(
        "monitor_window",
        int,
        200,
        "Drift monitoring compares each model's last this-many results with its reference.",
        between(10, 100_000),
    ),
    Setting(
        "monitor_min_results",
        int,
        30,
        "Fewest results in a window before drift monitoring judges it.",
        between(5, 100_000),
    ),
    Setting(
        "monitor_interval_seconds",
        float,
        300.0,
        "How often `appliance serve` recomputes the monitoring report and queues it for the hub.",
        between(1, 86_400),
    ),
    Setting(
        "monitor_max_queue_minutes",
        float,
        30.0,
        "Warn when an image has waited longer than this to be screened.",
        between(1, 7 * 24 * 60),
    ),
    Setting(
        "monitor_max_temperature_c",
        float,
        85.0,
        "Warn when a temperature sensor of the board reads this or more (degrees Celsius).",
        between(40, 125),
    ),
    Setting(
        "power_mode",
        str,
        "",
        "Jetson power mode applied at boot: an nvpmodel mode ID or name; empty keeps the board's.",
        text(64),
    ),
    Setting(
        "log_level",
        str,
        "INFO",
        "Logging level: DEBUG, INFO, WARNING or ERROR.",
        one_of("DEBUG", "INFO", "WARNING", "ERROR", case=False),
    ),
    Setting(
        "site_name",
        str,
        "Clinic",
        "The clinic's name, shown on every page and referral slip.",
        text(80, required=True),
    ),
    Setting(
        "language",
        str,
        "en",
        "Language for the login page and new users: en, fr or pt.",
        one_of("en", "fr", "pt"),
    ),
    Setting(
        "timezone",
        str,
        "UTC",
        "Time zone for dates on pages and slips, e.g. Africa/Maputo.",
        time_zone,
    ),
    Setting(
        "date_style",
        str,
        "dmy",
        "How dates are written on pages and slips: dmy (28/11/2026), ymd (2026-11-28) or"
        " mdy (11/28/2026); times always on the 24-hour clock.",
        one_of("dmy", "ymd", "mdy"),
    ),
    Setting(
        "session_idle_minutes",
        int,
        30,
        "Minutes without use before a login expires.",
        between(1, 24 * 60),
    ),
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
        url("http", "https"),
    ),
    Setting(
        "sync_ca_bundle",
        str,
        "",
        "PEM file of CA certificates to verify the hub's HTTPS certificate; empty: system CAs.",
    ),
    Setting(
        "sync_interval_seconds",
        float,
        60.0,
        "Pause between sync passes once all is sent.",
        positive,
    ),
    Setting(
        "sync_batch_size",
        int,
        200,
        "Results or reviews sent per request (at most 1000: the hub refuses larger requests).",
        between(1, 1000),
    ),
    Setting(
        "sync_max_kbps",
        int,
        0,
        "Most kilobits per second sync may use on average; 0 = no limit.",
        between(0, 10**7),
    ),
    Setting(
        "sync_timeout_seconds",
        float,
        30.0,
        "Network timeout of one request to the hub.",
        positive,
    ),
    Setting(
        "sync_retry_min_seconds",
        float,
        5.0,
        "First wait after a failed request; doubles (with jitter) on each failure.",
        positive,
    ),
    Setting(
        "sync_retry_max_seconds",
        float,
        900.0,
        "Longest wait between retries after failures.",
        positive,
    ),
    Setting(
        "sync_images",
        bool,
        False,
        "Also send the original images (after all results), in resumable chunks.",
    ),
    Setting(
        "sync_image_chunk_kb",
        int,
        1024,
        "Size of one image chunk sent to the hub (at most 8192: the hub's limit).",
        between(1, 8192),
    ),
    Setting(
        "sync_deidentify",
        bool,
        False,
        "Replace patient name, IDs and UIDs by keyed hashes before sync (images not sent).",
    ),
    Setting(
        "pacs_destinations",
        list,
        [],
        "PACS to send each result to as DICOM (SR and Secondary Capture): `AET@host:port`,"
        " optionally `:sr` or `:sc` for one kind only; read at start-up. Empty: none.",
        pacs_addresses,
    ),
    Setting(
        "pacs_interval_seconds",
        float,
        2.0,
        "How often the PACS sender looks for results to send.",
        between(0.1, 3600),
    ),
    Setting(
        "pacs_retry_min_seconds",
        float,
        5.0,
        "First wait after a PACS could not be reached; doubles (with jitter) on each failure.",
        between(0.01, 86_400),
    ),
    Setting(
        "pacs_retry_max_seconds",
        float,
        300.0,
        "Longest wait between tries while a PACS cannot be reached.",
        between(0.01, 86_400),
    ),
    Setting(
        "pacs_timeout_seconds",
        float,
        30.0,
        "Network timeout of one DICOM association with a PACS or the worklist.",
        between(1, 3600),
    ),
    Setting(
        "pacs_max_attempts",
        int,
        5,
        "A result a PACS refuses (a C-STORE failure status) is tried this many times, then"
        " shown as failed until `appliance pacs send --all-pending`.",
        between(1, 1000),
    ),
    Setting(
        "mwl_address",
        str,
        "",
        "Modality worklist SCP asked for today's procedures: `AET@host:port`; empty: none.",
        lambda v: pacs_addresses([v]) if v else None,
    ),
    Setting(
        "mwl_station_aet",
        str,
        "",
        "Scheduled Station AE Title to ask the worklist for; empty: every station's.",
        lambda v: ae_title(v) if v else None,
    ),
    Setting(
        "mwl_interval_seconds",
        float,
        300.0,
        "How often `appliance serve` asks the worklist again (the last answer is kept).",
        between(1, 86_400),
    ),
    Setting(
        "hub_database_url",
        str,
        "",
        "Hub only: postgresql://... database; empty: SQLite `hub.db` in the hub's data dir.",
        hub_database,
    ),
    Setting(
        "hub_fhir_server_url",
        str,
        "",
        "Hub only: FHIR R4 server base URL the hub pushes each report to (a transaction"
        " Bundle); empty: none.",
        url("http", "https"),
    ),
    Setting(
        "hub_fhir_push_interval_seconds",
        float,
        60.0,
        "Hub only: pause between pushes of new or changed reports to the FHIR server.",
        between(0.1, 86_400),
    ),
    Setting(
        "hub_fhir_push_settle_seconds",
        float,
        300.0,
        "Hub only: a report is pushed this long after its entry arrived, so that a batch"
        " still being written is never passed over.",
        between(0, 86_400),
    ),
    Setting(
        "hub_trusted_proxies",
        list,
        ["127.0.0.1", "::1"],
        "Hub only: reverse proxies (addresses or networks) whose X-Forwarded-For and"
        " X-Forwarded-Proto headers are believed; the hub sees every other peer as is.",
        networks,
    ),
    Setting(
        "hub_shed_after_ms",
        float,
        50.0,
        "Hub only, with --workers above 1: a box's sync request that waited longer than"
        " this for a worker is answered 503 with Retry-After, before any work, so boxes all"
        " returning at once are spread out; 0: never.",
        between(0, 600_000),
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


def _convert(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in {"1", "true", "yes", "on"}:
            return True
        if word in {"0", "false", "no", "off"}:
            return False
        raise ValueError(value)
    if kind is list:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(value)
        return [str(v) for v in value]
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(value)
    if kind is int and isinstance(value, float):
        raise ValueError(value)  # int(2.7) would quietly be 2
    if kind is str and not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(value)  # a TOML table, array or date where text belongs
    return kind(value)


def unprintable(value: str) -> str | None:
    """The first control character or lone surrogate in ``value`` (neither belongs in a
    setting: DEL made an unreadable config.toml, a surrogate cannot be written as UTF-8)."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return char
    return None


def _problem(setting: Setting, value: Any) -> str | None:
    """What is wrong with an already converted value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    texts = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    for item in texts:
        char = unprintable(item)
        if char is not None:
            return f"must not contain the control character U+{ord(char):04X}"
    return setting.check(value) if setting.check else None


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    """``value`` as the setting's kind, checked; ConfigError naming the setting if not."""
    kind = setting.kind
    try:
        converted = _convert(kind, value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"setting {setting.name!r} from {source}: {value!r} is not a valid {kind.__name__}"
        ) from None
    problem = _problem(setting, converted)
    if problem:
        raise ConfigError(f"setting {setting.name!r} from {source}: {value!r} {problem}")
    return converted


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
        values.update(read_config_file(config_file))

    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == "APPLIANCE_DATA_DIR":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        values[name] = _coerce(_setting(name), value, f"environment {key}")

    return Config(data_dir, values).with_overrides(**overrides)


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_string(str(v)) for v in value) + "]"
    return _toml_string(str(value))


def read_config_file(path: Path) -> dict[str, Any]:
    """``config.toml`` as a table, each value checked; ConfigError naming what is wrong."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return {name: _coerce(_setting(name), value, str(path)) for name, value in table.items()}


def save_settings(
    config: Config, updates: dict[str, Any], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Write ``updates`` into ``DATA_DIR/config.toml`` (atomically) and apply them to
    ``config`` in place. Returns the names the environment overrides (not applied live).

    Every value is checked as the loader checks it, and the new file is read back with
    the loader's own parser before it replaces the old one: the page can never write a
    file that stops the service from starting. Nothing is written on a ConfigError.
    """
    environ = os.environ if environ is None else environ
    coerced = {
        name: _coerce(_setting(name), value, "settings page") for name, value in updates.items()
    }
    path = config.data_dir / CONFIG_FILE
    current = read_config_file(path) if path.exists() else {}
    current.update(coerced)
    body = "".join(f"{name} = {_toml_value(value)}\n" for name, value in sorted(current.items()))
    try:
        data = body.encode("utf-8")
        reread = tomllib.loads(data.decode("utf-8"))
    except (UnicodeError, tomllib.TOMLDecodeError) as exc:  # a bug here, never a bad file
        raise ConfigError(f"the settings could not be written as valid TOML: {exc}") from exc
    checked = {
        name: _coerce(_setting(name), value, "config.toml") for name, value in reread.items()
    }
    if checked != current:
        raise ConfigError("the settings would not read back as written; nothing was saved")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    overridden = [name for name in coerced if ENV_PREFIX + name.upper() in environ]
    for name, value in coerced.items():
        if name not in overridden:
            config.values[name] = value
    return overridden

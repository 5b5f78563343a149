import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import SETTINGS, _toml_value, load_config, save_settings
from appliance.errors import ConfigError

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_layers_default_then_file_then_environment(tmp_path):
    (tmp_path / "config.toml").write_text('dicom_aet = "FROMFILE"\nport = 9000\nworkers = 2\n')
    config = load_config(tmp_path, environ={"APPLIANCE_PORT": "9100", "OTHER": "x"})
    assert config.dicom_aet == "FROMFILE"  # file beats default
    assert config.port == 9100  # environment beats file
    assert config.workers == 2
    assert config.dicom_port == 11112  # default
    assert config.with_overrides(port=9200, host=None).port == 9200  # flag beats all


def test_lists_and_booleans_from_environment(tmp_path):
    config = load_config(
        tmp_path,
        environ={
            "APPLIANCE_DICOM_ALLOWED_AETS": "XRAY1, FUNDUS",
            "APPLIANCE_USB_AUTO_IMPORT": "off",
        },
    )
    assert config.dicom_allowed_aets == ["XRAY1", "FUNDUS"]
    assert config.usb_auto_import is False


def test_pacs_destinations_from_config_toml_or_the_environment(tmp_path):
    (tmp_path / "config.toml").write_text('pacs_destinations = ["PACS1@10.0.0.5:104"]\n')
    assert load_config(tmp_path, environ={}).pacs_destinations == ["PACS1@10.0.0.5:104"]
    both = "PACS1@10.0.0.5:104, VIEW@viewer.local:11112:sc"
    config = load_config(tmp_path, environ={"APPLIANCE_PACS_DESTINATIONS": both})
    assert config.pacs_destinations == ["PACS1@10.0.0.5:104", "VIEW@viewer.local:11112:sc"]


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"APPLIANCE_NO_SUCH_THING": "1"}, "unknown setting 'no_such_thing'"),
        ({"APPLIANCE_PORT": "eighty"}, "not a valid int"),
        ({"APPLIANCE_USB_AUTO_IMPORT": "maybe"}, "not a valid bool"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(tmp_path, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, environ=environ)


def test_broken_config_file_names_the_file(tmp_path):
    (tmp_path / "config.toml").write_text("port = = 1")
    with pytest.raises(ConfigError, match="config.toml is not valid TOML"):
        load_config(tmp_path, environ={})


def test_every_setting_is_documented_exactly_once():
    text = DOC.read_text()
    documented = re.findall(r"^\| `([a-z_0-9]+)` \|", text, flags=re.MULTILINE)
    names = [s.name for s in SETTINGS]
    assert sorted(documented) == sorted(names), "docs/configuration.md and SETTINGS disagree"
    assert len(documented) == len(set(documented)), "a setting is documented twice"


# -- every value checked in one place (issue 12, item 11) ------------------------------

# What once broke the box: each of these was accepted and then gave a 500 on every page,
# a config.toml the service could not read, or a crash at start-up.
BAD_VALUES = [
    ("timezone", "Mars/Olympus_Mons", "time zone"),
    ("timezone", "../../../etc/passwd", "time zone"),
    ("site_name", "Clinic\x7f", "U+007F"),
    ("site_name", "Clinic\x00", "U+0000"),
    ("site_name", "   ", "must not be empty"),
    ("dicom_aet", "A" * 17, "1 to 16"),
    ("dicom_aet", "BACK\\SLASH", "backslash"),
    ("dicom_port", "99999", "[1, 65535]"),
    ("port", "0", "[1, 65535]"),
    ("cxr_threshold", "nan", "finite"),
    ("cxr_threshold", "-0.5", "[0, 1)"),
    ("fundus_threshold", "inf", "finite"),
    ("urgent_min_specificity", "1.5", "[0, 1]"),
    ("session_idle_minutes", "-5", "[1, 1440]"),
    ("workers", "0", "[1, 64]"),
    ("dicom_host", "every interface", "IP address or a host name"),
    ("max_image_frames", "0", "[1, 100000]"),
    ("max_decode_mb", "0", "[16, 65536]"),
    ("decode_retry_memory_mb", "64", "[256, 65536]"),
    ("sync_batch_size", "100000", "[1, 1000]"),
    ("job_lease_seconds", "-1", "more than 0"),
    ("inference_backend", "cuda", "one of"),
    ("dicom_allowed_aets", "OK, WAY_TOO_LONG_AE_TITLE", "1 to 16"),
    ("hub_trusted_proxies", "10.0.0.0/8, proxy.example.org", "not an IP address"),
    ("sync_hub_url", "ftp://hub", "URL"),
    ("calibration_min_positives", "0", "[5, 100000]"),
    ("monitor_window", "0", "[10, 100000]"),
    ("monitor_interval_seconds", "0", "[1, 86400]"),
    ("monitor_max_temperature_c", "nan", "finite"),
    ("pacs_destinations", "ORTHANC@pacs", "AET@host:port"),
    ("pacs_destinations", "PACS@pacs:104:xx", "AET@host:port"),
    ("pacs_destinations", "PACS@pacs:70000", "1 to 65535"),
    ("mwl_address", "RIS", "AET@host:port"),
    ("hub_fhir_server_url", "ftp://fhir", "URL"),
]


@pytest.mark.parametrize("name, value, message", BAD_VALUES)
def test_a_bad_value_is_refused_from_the_environment_naming_the_setting(
    tmp_path, name, value, message
):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={f"APPLIANCE_{name.upper()}": value})
    assert f"setting {name!r}" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize("name, value, message", BAD_VALUES)
def test_a_bad_value_in_config_toml_is_refused_naming_the_setting(tmp_path, name, value, message):
    setting = next(s for s in SETTINGS if s.name == name)
    typed = {int: int, float: float, bool: str, str: str}.get(setting.kind)
    literal = [v.strip() for v in value.split(",")] if setting.kind is list else typed(value)
    # Written the way a technician's editor would (TOML escapes, so the file parses).
    text = f"{name} = {_toml_value(literal)}\n"
    if isinstance(literal, float) and not math.isfinite(literal):
        text = f"{name} = {value}\n"  # TOML's own nan / inf
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={})
    assert "config.toml" in str(caught.value) and f"setting {name!r}" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize("name, value, message", BAD_VALUES)
def test_save_settings_refuses_a_bad_value_and_leaves_the_file_alone(
    tmp_path, name, value, message
):
    config = load_config(tmp_path, environ={})
    save_settings(config, {"site_name": "Before"}, environ={})
    before = (tmp_path / "config.toml").read_bytes()
    with pytest.raises(ConfigError, match=re.escape(message)):
        save_settings(config, {name: value}, environ={})
    assert (tmp_path / "config.toml").read_bytes() == before
    assert load_config(tmp_path, environ={}).site_name == "Before"


# Values per kind, chosen to sit on and around every edge a check has.
CANDIDATES = {
    str: [
        "",
        "x",
        "CLINIC1",
        "A" * 16,
        "A" * 17,
        'Centre "Saint-Luc" \\ Ndola',
        "Centro de Saúde 🏥",
        "tab\there",
        "del\x7f",
        "nul\x00",
        "\u2028line separator",
        "\ud800",
        "Africa/Maputo",
        "UTC",
        "Mars/Olympus",
        "https://hub.example.org",
        "postgresql://hub@db/hub",
        "DEBUG",
        "fp32",
        "tensorrt",
        "adult",
        "ask",
        "ymd",  # date_style
        "fr",
        "0.0.0.0",
        "box.local",
        "x" * 81,
    ],
    int: [-1, 0, 1, 16, 80, 1000, 1001, 8192, 8193, 65535, 65536, 10**12, 2**63],
    float: [
        float("nan"),
        float("inf"),
        -1.0,
        0.0,
        1e-9,
        0.5,
        0.999,
        1.0,
        1.5,
        85.0,
        1e308,
    ],
    bool: [True, False, "on", "maybe"],
    list: [[], ["XRAY1"], ["XRAY1", "A" * 17], ["10.0.0.0/8"], ["/media", "tab\t"], ["a,b"]],
}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_everything_save_settings_accepts_the_loader_reads_back(tmp_path, setting):
    """The round trip the Settings page relies on: a value is either refused, or written
    and read back unchanged by the loader the service starts with."""
    accepted = 0
    for value in CANDIDATES[setting.kind]:
        config = load_config(tmp_path, environ={})
        try:
            save_settings(config, {setting.name: value}, environ={})
        except ConfigError:
            continue
        accepted += 1
        reread = load_config(tmp_path, environ={})
        assert getattr(reread, setting.name) == getattr(config, setting.name), value
        assert reread.values == config.values
    assert accepted, f"no candidate value fits {setting.name}"


def test_a_config_toml_that_does_not_read_back_is_never_written(tmp_path):
    config = load_config(tmp_path, environ={})
    save_settings(config, {"site_name": 'Clinic \\ "quoted" é'}, environ={})
    text = (tmp_path / "config.toml").read_text(encoding="utf-8")
    assert load_config(tmp_path, environ={}).site_name == 'Clinic \\ "quoted" é'
    assert not list(tmp_path.glob("*.tmp")) and text.endswith("\n")


def test_the_service_refuses_to_start_on_a_bad_config_toml_and_says_which_setting(tmp_path):
    """A real `appliance serve`: it stops at once with a message a technician can act on."""
    (tmp_path / "config.toml").write_text('timezone = "Mars/Olympus"\nport = 8080\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "setting 'timezone'" in done.stderr and "config.toml" in done.stderr
    doctor = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert "setting 'timezone'" in doctor.stderr  # the first thing a technician runs
    flag = subprocess.run(
        [sys.executable, "-m", "appliance", "settings", "--data-dir", str(tmp_path / "other")] + [],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "APPLIANCE_DICOM_AET": "A_VERY_LONG_AE_TITLE"},
    )
    assert flag.returncode == 1 and "setting 'dicom_aet'" in flag.stderr

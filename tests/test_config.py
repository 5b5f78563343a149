import re
from pathlib import Path

import pytest

from appliance.config import SETTINGS, load_config
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

"""The shell scripts under jetson/: shellcheck on every one, and the helpers' behaviour
where it can run off the device (power-mode lookup against a fake /etc/nvpmodel.conf,
the eject helper refusing what is not a USB volume)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JETSON = REPO / "jetson"
POWER = JETSON / "bin" / "appliance-power-mode"
SELFTEST = JETSON / "selftest.sh"
EJECT = JETSON / "bin" / "appliance-eject"
SCRIPTS = sorted(
    p
    for p in JETSON.rglob("*")
    if p.is_file() and p.read_bytes()[:2] == b"#!" and b"sh" in p.read_bytes().split(b"\n")[0]
)


def test_every_script_is_found_and_executable() -> None:
    names = {p.relative_to(JETSON).as_posix() for p in SCRIPTS}
    assert names == {
        "install.sh",
        "bin/appliance-eject",
        "bin/appliance-kiosk",
        "bin/appliance-power-mode",
        "bin/appliance-usb-mount",
        "kiosk/session",
        "selftest.sh",
    }
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(JETSON).as_posix())
def test_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; scripts/test does)")
    result = subprocess.run(
        [shellcheck, "--severity=style", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


def power(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(POWER), "--root", str(root), "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.fixture
def orin(tmp_path: Path) -> Path:
    (tmp_path / "etc/appliance").mkdir(parents=True)
    (tmp_path / "etc/nvpmodel.conf").write_text(
        "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=MODE_15W >\n"
        "< POWER_MODEL ID=2 NAME=MODE_30W >\n< PM_CONFIG DEFAULT=2 >\n"
    )
    (tmp_path / "etc/appliance/appliance.env").write_text("APPLIANCE_DATA_DIR=/srv/data\n")
    (tmp_path / "srv/data").mkdir(parents=True)
    return tmp_path


def test_power_mode_by_name_or_id(orin: Path) -> None:
    by_name = power(orin, "mode_30w")
    assert by_name.returncode == 0 and "would run: nvpmodel -m 2" in by_name.stdout
    by_id = power(orin, "0")
    assert "power: nvpmodel mode 0 (MAXN)" in by_id.stdout


def test_power_mode_from_the_setting(orin: Path) -> None:
    assert "left as it is" in power(orin).stdout  # no setting: the board's choice stands
    config = orin / "srv/data/config.toml"
    config.write_text('dicom_port = 104\npower_mode = "MODE_15W"  # quiet clinic\n')
    assert "would run: nvpmodel -m 1" in power(orin).stdout
    from_env = power(orin, env={"APPLIANCE_POWER_MODE": "MAXN"})
    assert "would run: nvpmodel -m 0" in from_env.stdout


def test_unknown_power_mode_lists_the_boards_modes(orin: Path) -> None:
    result = power(orin, "MAXN_SUPER")
    assert result.returncode == 1
    assert 'no power mode "MAXN_SUPER"' in result.stderr and "2 MODE_30W" in result.stderr


def test_power_mode_off_a_jetson_is_a_no_op(tmp_path: Path) -> None:
    result = power(tmp_path, "MAXN")
    assert result.returncode == 0 and "not a Jetson" in result.stdout


def test_eject_refuses_what_is_not_a_mounted_usb_volume(tmp_path: Path) -> None:
    usage = subprocess.run(["bash", str(EJECT)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2
    folder = subprocess.run(
        ["bash", str(EJECT), str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert folder.returncode == 2 and "not a mount point" in folder.stderr
    root = subprocess.run(["bash", str(EJECT), "/"], capture_output=True, text=True, timeout=30)
    assert root.returncode == 2, root.stderr  # never unmounts the system disk


def test_selftest_runs_the_installed_appliance_and_passes_on_its_verdict(tmp_path: Path) -> None:
    """The real ``appliance doctor --gpu-selftest`` behind the wrapper (this venv standing
    for /opt/appliance/venv): no TensorRT here, so exit 2 naming what is missing."""
    (tmp_path / "prefix").mkdir()
    (tmp_path / "prefix" / "venv").symlink_to(Path(sys.prefix))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
    }
    args = ["bash", str(SELFTEST), "--prefix", str(tmp_path / "prefix"), "--json"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert "the GPU self-test needs TensorRT and an NVIDIA GPU" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""

    missing = subprocess.run(
        ["bash", str(SELFTEST), "--prefix", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert missing.returncode == 2 and "install the appliance first" in missing.stderr

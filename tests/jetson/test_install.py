"""jetson/install.sh against fake machines (a folder standing for /): what it plans on
two JetPack releases and a plain PC, what it refuses, that a second run changes nothing,
and that every systemd unit it writes passes ``systemd-analyze verify``.

The fake root holds the files the script reads on a real machine (etc/nv_tegra_release,
var/lib/dpkg/status read through ``dpkg-query --admindir``, proc/device-tree/model,
etc/os-release, etc/nvpmodel.conf) and the two stubs it documents for what is not a
file (.install-stub/uname-m, .install-stub/findmnt). Nothing here runs on a Jetson.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "jetson" / "install.sh"

JETPACK_61 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024"  # noqa: E501
JETPACK_62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"  # noqa: E501
JETPACK_60 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024"  # noqa: E501
JETPACK_5 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"  # noqa: E501
ORIN_NANO_MODES = (
    "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=7W >\n"
    "< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n< PM_CONFIG DEFAULT=2 >\n"
)
DISKS = (
    "/ ext4 50000000000 rw,relatime\n"
    "/boot/efi vfat 60000000 rw\n"
    "/data ext4 400000000000 rw,noatime\n"
    "/mnt/backup ext4 900000000000 rw\n"
    "/media/appliance/STICK vfat 8000000000 ro,nosuid\n"
)


def fake_machine(
    root: Path,
    *,
    tegra_release: str | None = None,
    l4t_package: str | None = None,
    os_release: str = 'ID=ubuntu\nVERSION_ID="22.04"\n',
    arch: str = "aarch64",
    disks: str = DISKS,
) -> Path:
    for folder in ("etc", "var/lib/dpkg", "proc/device-tree", ".install-stub"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(os_release)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("video:x:44:\nrender:x:109:\ninput:x:105:\n")
    (root / ".install-stub/uname-m").write_text(arch + "\n")
    (root / ".install-stub/findmnt").write_text(disks)
    status = ""
    if tegra_release is not None:
        (root / "etc/nv_tegra_release").write_text(tegra_release + "\n# KERNEL_VARIANT: oot\n")
        (root / "proc/device-tree/model").write_bytes(
            b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0"
        )
        (root / "etc/nvpmodel.conf").write_text(ORIN_NANO_MODES)
    if l4t_package is not None:
        status = (
            "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\n"
            f"Version: {l4t_package}\nDescription: NVIDIA Core Package\n\n"
        )
    (root / "var/lib/dpkg/status").write_text(status)
    return root


def install(root: Path, *args: str, dry_run: bool = True) -> subprocess.CompletedProcess:
    command = ["bash", str(INSTALL), "--root", str(root), *args]
    if dry_run:
        command.append("--dry-run")
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def planned(result: subprocess.CompletedProcess, kind: str) -> list[str]:
    prefix = kind + ": "
    return [line[len(prefix) :] for line in result.stdout.splitlines() if line.startswith(prefix)]


def apt_packages(result: subprocess.CompletedProcess) -> set[str]:
    (line,) = [p for p in planned(result, "apt") if p.startswith("install ")]
    return set(line.split()[1:])


@pytest.mark.parametrize(
    ("release", "package", "jetpack"),
    [(JETPACK_61, "36.4.0-20240912212859", "6.1"), (JETPACK_62, "36.4.3-20250107174145", "6.2")],
)
def test_jetpack_6_plan(tmp_path: Path, release: str, package: str, jetpack: str) -> None:
    root = fake_machine(tmp_path, tegra_release=release, l4t_package=package)
    result = install(root, "--power-mode", "maxn_super")
    assert result.returncode == 0, result.stderr
    detect = " ".join(planned(result, "detect"))
    l4t = package.split("-")[0]
    assert "platform=jetson" in detect and f"l4t=R{l4t}" in detect
    assert f"jetpack={jetpack} (TensorRT 10.3, CUDA 12.6)" in detect
    assert "Orin Nano" in detect
    packages = apt_packages(result)
    # TensorRT's Python bindings and CUDA from JetPack's apt, never PyPI
    assert {"python3-libnvinfer", "cuda-cudart-dev-12-6", "cuda-driver-dev-12-6"} <= packages
    assert {"udisks2", "policykit-1", "onboard", "chromium-browser", "xinit"} <= packages
    would_run = planned(result, "would run")
    assert "python3 -m venv --system-site-packages /opt/appliance/venv" in would_run
    pycuda = [c for c in would_run if "--no-binary pycuda" in c]
    assert len(pycuda) == 1 and "CUDA_ROOT=/usr/local/cuda-12.6" in pycuda[0]
    assert f"/opt/appliance/venv/bin/pip install --upgrade {REPO}[tensorrt]" in would_run
    assert not any("pip install" in c and "tensorrt>=" in c for c in would_run)
    assert "nvpmodel -m 2" in would_run  # MAXN_SUPER looked up in /etc/nvpmodel.conf
    assert any(c.startswith("useradd --system") and c.endswith(" appliance") for c in would_run)
    assert "usermod -a -G video appliance" in would_run
    assert (
        "systemctl enable appliance.service appliance-power-mode.service appliance-kiosk.service"
    ) in would_run
    written = planned(result, "would write")
    for unit in ("appliance.service", "appliance-kiosk.service", "appliance-usb-mount@.service"):
        assert f"/etc/systemd/system/{unit}" in written
    assert "/etc/systemd/journald.conf.d/appliance.conf" in written
    assert "/etc/udev/rules.d/90-appliance-usb.rules" in written
    # data on the largest writable local disk; /mnt is a USB root, so not there
    assert planned(result, "data")[0].startswith("/data/appliance-data (largest writable disk")
    assert any("/mnt/backup" in note for note in planned(result, "note"))
    assert not any(root.joinpath(p.lstrip("/")).exists() for p in written)  # dry run


def test_plain_pc_gets_onnxruntime_only(tmp_path: Path) -> None:
    root = fake_machine(
        tmp_path,
        os_release='ID=debian\nVERSION_ID="12"\n',
        arch="x86_64",
        disks="/ ext4 200000000000 rw,relatime\n",
    )
    result = install(root, "--no-kiosk")
    assert result.returncode == 0, result.stderr
    assert planned(result, "detect") == ['platform=pc distro="debian 12" arch=x86_64']
    packages = apt_packages(result)
    assert "python3-libnvinfer" not in packages and not any("cuda" in p for p in packages)
    assert "polkitd" in packages and "chromium" not in packages  # --no-kiosk
    would_run = planned(result, "would run")
    assert f"/opt/appliance/venv/bin/pip install --upgrade {REPO}" in would_run
    assert not any("pycuda" in c or "nvpmodel" in c for c in would_run)
    assert "systemctl enable appliance.service" in would_run
    assert planned(result, "data")[0].startswith("/var/lib/appliance")
    assert "/etc/systemd/system/appliance-kiosk.service" not in planned(result, "would write")


def test_a_pc_with_a_kiosk_uses_debians_chromium(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, os_release='ID=debian\nVERSION_ID="12"\n', arch="x86_64")
    assert "chromium" in apt_packages(install(root))


@pytest.mark.parametrize(
    ("release", "package", "says"),
    [
        (JETPACK_60, "36.3.0-20240506102626", "ships TensorRT 8.6"),
        (JETPACK_5, "35.4.1-20230801124926", "Python 3.8"),
    ],
)
def test_unsupported_jetpack_is_refused(
    tmp_path: Path, release: str, package: str, says: str
) -> None:
    result = install(fake_machine(tmp_path, tegra_release=release, l4t_package=package))
    assert result.returncode == 3
    assert result.stderr.startswith("refuse: ") and says in result.stderr
    assert "JetPack 6.1 or newer" in result.stderr
    assert "apt:" not in result.stdout  # nothing planned past the refusal


def test_jetpack_60_may_run_cpu_only(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, tegra_release=JETPACK_60, l4t_package="36.3.0-20240506102626")
    result = install(root, "--cpu-only")
    assert result.returncode == 0, result.stderr
    assert "python3-libnvinfer" not in apt_packages(result)
    assert f"/opt/appliance/venv/bin/pip install --upgrade {REPO}" in planned(result, "would run")


def test_old_or_foreign_pc_is_refused(tmp_path: Path) -> None:
    old = install(fake_machine(tmp_path / "a", os_release='ID=debian\nVERSION_ID="11"\n'))
    assert old.returncode == 3 and "Debian 12 or newer" in old.stderr
    other = install(fake_machine(tmp_path / "b", os_release='ID=fedora\nVERSION_ID="40"\n'))
    assert other.returncode == 3 and "not Debian or Ubuntu" in other.stderr
    arm32 = install(fake_machine(tmp_path / "c", arch="armv7l"))
    assert arm32.returncode == 3 and "64-bit ARM" in arm32.stderr


def test_release_file_and_package_disagreeing_trusts_the_package(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, tegra_release=JETPACK_61, l4t_package="36.4.3-20250107174145")
    result = install(root)
    assert "l4t=R36.4.3" in planned(result, "detect")[0]
    assert any("nvidia-l4t-core is 36.4.3" in n for n in planned(result, "note"))


# -- writing into a fake root: idempotent, and units that systemd accepts ----------------


@pytest.fixture
def installed_jetson(tmp_path: Path) -> Path:
    root = fake_machine(tmp_path, tegra_release=JETPACK_62, l4t_package="36.4.3-20250107174145")
    first = install(root, dry_run=False)
    assert first.returncode == 0, first.stderr
    assert len(planned(first, "write")) == 17
    return root


def test_second_run_changes_nothing_and_keeps_the_data_dir(installed_jetson: Path) -> None:
    (installed_jetson / ".install-stub/findmnt").write_text(
        "/ ext4 50000000000 rw\n/srv ext4 999000000000 rw\n"  # a bigger disk appeared
    )
    again = install(installed_jetson, dry_run=False)
    assert again.returncode == 0, again.stderr
    assert planned(again, "write") == []
    assert len(planned(again, "unchanged")) == 17
    assert planned(again, "data")[0] == "/data/appliance-data (kept from the previous install)"
    assert "0 files changed" in planned(again, "done")[0]
    assert "udevadm control --reload" not in planned(again, "would run")


def test_rendered_files_have_no_placeholders_left(installed_jetson: Path) -> None:
    for path in installed_jetson.rglob("*"):
        if path.is_file() and ".install-stub" not in path.parts:
            assert not re.findall(r"@[A-Z_]+@", path.read_text()), path
    unit = (installed_jetson / "etc/systemd/system/appliance.service").read_text()
    assert "ReadWritePaths=/data/appliance-data\n" in unit
    assert "ExecStart=/opt/appliance/venv/bin/appliance serve\n" in unit
    env = (installed_jetson / "etc/appliance/appliance.env").read_text()
    assert "APPLIANCE_DATA_DIR=/data/appliance-data" in env


def test_appliance_unit_has_the_promised_settings(installed_jetson: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read(installed_jetson / "etc/systemd/system/appliance.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/data/appliance-data",
        "User": "appliance",
    }.items():
        assert service[key] == value, key


SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def test_every_unit_passes_systemd_analyze_verify(installed_jetson: Path) -> None:
    """``systemd-analyze verify --root`` resolves units, dependencies and executables inside
    the fake root, so the fake root gets the host's system units (for targets such as
    network-online.target) and stand-ins for the programs apt and pip would install."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not SYSTEM_UNITS.is_dir():
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/test does)")
    root = installed_jetson
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "bin").symlink_to("usr/bin")
    for program in ("opt/appliance/venv/bin/appliance", "usr/bin/chvt"):
        path = root / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = sorted((root / "etc/systemd/system").glob("*.service"))
    assert len(units) == 4
    names = ["/etc/systemd/system/" + u.name.replace("@.service", "@sdb1.service") for u in units]
    result = subprocess.run(
        [analyze, "verify", f"--root={root}", *names], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and bad values, so any message is a failure
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", (
        result.stdout + result.stderr
    )


def test_journald_dropin_uses_only_known_keys(installed_jetson: Path) -> None:
    """journald.conf has no verifier; its keys are checked against the list systemd itself
    ships, commented out, in /etc/systemd/journald.conf."""
    shipped = Path("/etc/systemd/journald.conf")
    if not shipped.is_file():
        pytest.fail("/etc/systemd/journald.conf is missing: apt-get install systemd")
    known = set(re.findall(r"^#?(\w+)=", shipped.read_text(), re.MULTILINE))
    dropin = configparser.ConfigParser(interpolation=None)
    dropin.optionxform = str  # type: ignore[assignment, method-assign]
    dropin.read(installed_jetson / "etc/systemd/journald.conf.d/appliance.conf")
    assert dropin.sections() == ["Journal"]
    assert set(dropin["Journal"]) <= known, set(dropin["Journal"]) - known
    assert dropin["Journal"]["SystemMaxUse"] == "200M"


def test_udev_rule_is_well_formed_and_read_only(installed_jetson: Path) -> None:
    rule = (installed_jetson / "etc/udev/rules.d/90-appliance-usb.rules").read_text()
    token = r'[A-Z_]+(\{[\w%]+\})?(==|!=|=|\+=)"[^"]*"'
    line_of_tokens = re.compile(rf"^{token}(, *{token})*$")
    for line in rule.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line_of_tokens.match(line), line
    defaults = re.search(r'UDISKS_MOUNT_OPTIONS_DEFAULTS}="([^"]*)"', rule)
    allowed = re.search(r'UDISKS_MOUNT_OPTIONS_ALLOW}="([^"]*)"', rule)
    assert defaults and "ro" in defaults.group(1).split(",")
    assert allowed and "rw" not in allowed.group(1).split(",")
    assert 'SYSTEMD_WANTS}+="appliance-usb-mount@%k.service"' in rule


def test_polkit_grants_only_the_service_user(installed_jetson: Path) -> None:
    rules = (installed_jetson / "etc/polkit-1/rules.d/50-appliance-udisks.rules").read_text()
    assert 'subject.user == "appliance"' in rules
    assert 'action.lookup("drive.removable.bus") == "usb"' in rules
    assert "mount-system" not in rules
    pkla = configparser.ConfigParser(interpolation=None)
    pkla.read(installed_jetson / "etc/polkit-1/localauthority/50-local.d/50-appliance-udisks.pkla")
    (section,) = pkla.sections()
    assert pkla[section]["identity"] == "unix-user:appliance"
    actions = pkla[section]["action"].split(";")
    assert "org.freedesktop.udisks2.power-off-drive" in actions
    assert not any(action.endswith("-system") for action in actions)

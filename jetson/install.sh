#!/usr/bin/env bash
# Install or upgrade the clinic screening appliance on a Jetson Orin (JetPack 6.1 or
# newer) or on a plain Debian/Ubuntu PC (ONNX Runtime on the CPU). Safe to run again:
# every step checks what is already there, so re-running it is how the box is upgraded.
#
#   sudo jetson/install.sh                       # install / upgrade this machine
#   jetson/install.sh --dry-run                  # print what it would do, change nothing
#   jetson/install.sh --dry-run --root /tmp/fake # the same, reading a fake machine
#
# With --root DIR (not /), facts are read from DIR (etc/nv_tegra_release,
# var/lib/dpkg/status, proc/device-tree/model, etc/os-release, etc/nvpmodel.conf) and
# files are written under DIR, but no command that changes a system is run (apt-get,
# useradd, pip, systemctl, nvpmodel): those are printed as "would run". What cannot be
# read from files comes from DIR/.install-stub/ (see jetson/README.md, "Testing"):
#   uname-m   the machine (aarch64, x86_64)
#   findmnt   mounted filesystems as `findmnt -rnb -o TARGET,FSTYPE,AVAIL,OPTIONS`
# Every line printed starts with what it is about (detect, refuse, apt, user, data,
# write, run, would run, pip, power, note, done) so it reads as a plan.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE="$(dirname "$HERE")"  # what pip installs: this checkout, or --package

ROOT=/
DRY_RUN=0
PREFIX=/opt/appliance
DATA_DIR=""
SERVICE_USER=appliance
KIOSK_USER=kiosk
KIOSK=1
CPU_ONLY=0
POWER_MODE=""
PORT=8080
WHEELHOUSE=""

usage() {
  cat <<'EOF'
Usage: install.sh [options]
  --dry-run             print the plan; change nothing
  --root DIR            act on a fake root (tests); commands are never run there
  --data-dir DIR        data directory (default: kept from a previous install, else on
                        the largest writable disk)
  --prefix DIR          program files and venv (default /opt/appliance)
  --cpu-only            on a Jetson: no TensorRT, ONNX Runtime only
  --power-mode MODE     nvpmodel mode ID or name (default: the power_mode setting)
  --port N              web page port the kiosk opens (default 8080)
  --no-kiosk            do not boot into the full-screen screening page
  --package PATH        what pip installs: a wheel or a source folder (default: this
                        checkout)
  --wheelhouse DIR      install Python packages from DIR only (offline install)
  -h, --help            this text
EOF
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --root) ROOT="$2"; shift ;;
    --data-dir) DATA_DIR="$2"; shift ;;
    --prefix) PREFIX="$2"; shift ;;
    --cpu-only) CPU_ONLY=1 ;;
    --power-mode) POWER_MODE="$2"; shift ;;
    --port) PORT="$2"; shift ;;
    --no-kiosk) KIOSK=0 ;;
    --package) SOURCE="$2"; shift ;;
    --wheelhouse) WHEELHOUSE="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="${ROOT%/}"          # "" for the real root
LIVE=0                    # 1: commands really run (real root, not a dry run)
[ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && LIVE=1
STUB="$ROOT/.install-stub"

say() { printf '%s\n' "$*"; }
refuse() { say "refuse: $*" >&2; exit 3; }
# A path on the target machine.
at() { printf '%s%s' "$ROOT" "$1"; }

# Run a command on the target, or say that it would be run.
run() {
  if [ "$LIVE" = 1 ]; then
    say "run: $*"
    "$@"
  else
    say "would run: $*"
  fi
}

# --- what machine is this? -------------------------------------------------------------

PLATFORM=pc
L4T=""
JETPACK=""
BOARD=""
CUDA=""
ARCH=""
DISTRO=""

machine_arch() {
  if [ -n "$ROOT" ] && [ -f "$STUB/uname-m" ]; then
    tr -d '[:space:]' <"$STUB/uname-m"
  else
    uname -m
  fi
}

# L4T release from /etc/nv_tegra_release: "# R36 (release), REVISION: 4.3, ..." -> 36.4.3
l4t_from_release_file() {
  sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\),.*/\1.\2/p' "$(at /etc/nv_tegra_release)" |
    head -n 1
}

# The installed nvidia-l4t-core package: "36.4.3-20250107174145" -> 36.4.3
l4t_from_dpkg() {
  dpkg-query --admindir="$(at /var/lib/dpkg)" -W -f='${Version}' nvidia-l4t-core 2>/dev/null |
    sed 's/-.*//' || true
}

detect() {
  ARCH="$(machine_arch)"
  if [ -f "$(at /etc/nv_tegra_release)" ]; then
    PLATFORM=jetson
    local from_file from_dpkg
    from_file="$(l4t_from_release_file)"
    from_dpkg="$(l4t_from_dpkg)"
    L4T="${from_dpkg:-$from_file}"
    if [ -n "$from_file" ] && [ -n "$from_dpkg" ] && [ "$from_file" != "$from_dpkg" ]; then
      say "note: /etc/nv_tegra_release says R$from_file, nvidia-l4t-core is $from_dpkg; using the package"
    fi
    [ -n "$L4T" ] || refuse "cannot read the L4T release (/etc/nv_tegra_release, dpkg nvidia-l4t-core)"
    BOARD="$(tr -d '\0' <"$(at /proc/device-tree/model)" 2>/dev/null || echo "unknown Jetson")"
    say "detect: platform=jetson board=\"$BOARD\" l4t=R$L4T arch=$ARCH"
    check_jetson_release
  else
    # shellcheck disable=SC1090  # os-release is KEY=value lines by specification
    DISTRO="$(. "$(at /etc/os-release)" && echo "${ID:-unknown} ${VERSION_ID:-?}")"
    say "detect: platform=pc distro=\"$DISTRO\" arch=$ARCH"
    check_pc_release
  fi
}

# JetPack 6.1+ (L4T R36.4.x) carries TensorRT 10.3 and CUDA 12.6, which the engines need.
check_jetson_release() {
  local major minor
  major="${L4T%%.*}"
  minor="$(echo "$L4T" | cut -d. -f2)"
  [ "$ARCH" = aarch64 ] || refuse "a Jetson should be aarch64, this is $ARCH"
  case "$L4T" in
    36.4.0|36.4.1|36.4.2) JETPACK=6.1 ;;
    36.4.3) JETPACK=6.2 ;;
    36.4.*) JETPACK="6.2.1+" ;;
    36.3.*) JETPACK=6.0 ;;
    36.*) JETPACK="6 developer preview" ;;
    35.*) JETPACK=5 ;;
    *) JETPACK=unknown ;;
  esac
  if [ "$major" = 36 ] && [ "$minor" -ge 4 ]; then
    CUDA=12.6
    [ "$CPU_ONLY" = 1 ] && say "note: --cpu-only: TensorRT is not installed; ONNX Runtime only"
    say "detect: jetpack=$JETPACK (TensorRT 10.3, CUDA $CUDA)"
    return
  fi
  if [ "$major" = 36 ] && [ "$CPU_ONLY" = 1 ]; then
    say "detect: jetpack=$JETPACK; --cpu-only: ONNX Runtime only, no TensorRT"
    return
  fi
  case "$major" in
    35|34|32)
      refuse "L4T R$L4T is JetPack $JETPACK (Ubuntu 20.04, Python 3.8): the appliance needs" \
        "JetPack 6.1 or newer (L4T R36.4). Reflash the board with JetPack 6.2 (jetson/README.md)." ;;
    36)
      refuse "L4T R$L4T is JetPack $JETPACK, which ships TensorRT 8.6; the appliance's engines" \
        "need TensorRT 10.3 (JetPack 6.1 or newer, L4T R36.4). Upgrade JetPack" \
        "(jetson/README.md), or run again with --cpu-only for ONNX Runtime only." ;;
    *)
      refuse "L4T R$L4T (JetPack $JETPACK) has not been tested with the appliance; supported:" \
        "JetPack 6.1/6.2 (L4T R36.4.x)." ;;
  esac
}

check_pc_release() {
  case "$ARCH" in
    x86_64|aarch64) ;;
    *) refuse "$ARCH is not supported: the appliance runs on x86-64 or 64-bit ARM" ;;
  esac
  local id version
  id="${DISTRO%% *}"
  version="${DISTRO#* }"
  case "$id" in
    debian) [ "${version%%.*}" -ge 12 ] 2>/dev/null ||
      refuse "Debian $version is too old: Debian 12 or newer has Python 3.10+" ;;
    ubuntu) [ "${version%%.*}" -ge 22 ] 2>/dev/null ||
      refuse "Ubuntu $version is too old: Ubuntu 22.04 or newer has Python 3.10+" ;;
    *) refuse "$DISTRO is not Debian or Ubuntu; install by hand (jetson/README.md)" ;;
  esac
}

# --- apt -------------------------------------------------------------------------------

apt_packages() {
  # libopenjp2-7: JPEG 2000 at reduced resolution for screening (glymur).
  local pkgs=(python3 python3-venv python3-dev build-essential sqlite3 curl udisks2 ntfs-3g
    libopenjp2-7)
  # polkit: Ubuntu 22.04 (and JetPack 6) still call it policykit-1
  if [ "$PLATFORM" = jetson ] || [ "$DISTRO" = "ubuntu 22.04" ]; then
    pkgs+=(policykit-1)
  else
    pkgs+=(polkitd)
  fi
  if [ "$PLATFORM" = jetson ] && [ "$CPU_ONLY" = 0 ]; then
    # TensorRT's Python bindings and CUDA headers from JetPack's apt repository (never
    # pip: PyPI's tensorrt wheels are not built for Jetson); headers for pycuda's build.
    local cuda_pkg="${CUDA/./-}"
    pkgs+=(python3-libnvinfer libnvinfer-bin "cuda-cudart-dev-$cuda_pkg"
      "cuda-driver-dev-$cuda_pkg" "cuda-nvcc-$cuda_pkg")
  fi
  if [ "$KIOSK" = 1 ]; then
    # Xorg core has the modesetting driver (PCs); a Jetson uses L4T's own X driver.
    pkgs+=(xserver-xorg-core xserver-xorg-input-libinput xserver-xorg-legacy xinit
      x11-xserver-utils dbus-x11 matchbox-window-manager onboard at-spi2-core unclutter
      fonts-dejavu-core)
    # Debian packages Chromium; Ubuntu's chromium-browser installs the snap.
    if [ "${DISTRO%% *}" = debian ]; then pkgs+=(chromium); else pkgs+=(chromium-browser); fi
  fi
  echo "${pkgs[@]}"
}

install_apt() {
  local pkgs
  read -r -a pkgs <<<"$(apt_packages)"
  say "apt: install ${pkgs[*]}"
  run apt-get update -q
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
}

# --- users and the data directory --------------------------------------------------------

has_user() { grep -q "^$1:" "$(at /etc/passwd)" 2>/dev/null; }
has_group() { grep -q "^$1:" "$(at /etc/group)" 2>/dev/null; }

ensure_users() {
  if has_user "$SERVICE_USER"; then
    say "user: $SERVICE_USER exists"
  else
    say "user: create system user $SERVICE_USER"
    run useradd --system --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
  if [ "$PLATFORM" = jetson ]; then
    # the Jetson GPU's device nodes (/dev/nvhost-*, /dev/nvmap) belong to these groups
    local group
    for group in video render; do
      if has_group "$group"; then run usermod -a -G "$group" "$SERVICE_USER"; fi
    done
  fi
  if [ "$KIOSK" = 1 ]; then
    if has_user "$KIOSK_USER"; then
      say "user: $KIOSK_USER exists"
    else
      say "user: create kiosk user $KIOSK_USER (runs the screen; cannot read patient data)"
      run useradd --create-home --shell /usr/sbin/nologin "$KIOSK_USER"
    fi
    local group
    for group in video input render audio; do
      if has_group "$group"; then run usermod -a -G "$group" "$KIOSK_USER"; fi
    done
  fi
}

# Mounted filesystems: "TARGET FSTYPE AVAIL OPTIONS" (findmnt -r escapes spaces).
mounts() {
  if [ -n "$ROOT" ]; then
    cat "$STUB/findmnt" 2>/dev/null || true
  else
    findmnt -rnb -o TARGET,FSTYPE,AVAIL,OPTIONS
  fi
}

# The data directory: kept from the previous install (an upgrade never moves data),
# else on the writable local disk with the most free space.
choose_data_dir() {
  local env_file
  env_file="$(at /etc/appliance/appliance.env)"
  if [ -z "$DATA_DIR" ] && [ -f "$env_file" ]; then
    DATA_DIR="$(sed -n 's/^APPLIANCE_DATA_DIR=//p' "$env_file" | tr -d '"')"
    [ -n "$DATA_DIR" ] && say "data: $DATA_DIR (kept from the previous install)"
  fi
  if [ -z "$DATA_DIR" ]; then
    local best="" best_avail=-1 target fstype avail options
    while read -r target fstype avail options; do
      case "$fstype" in ext4|xfs|btrfs|f2fs) ;; *) continue ;; esac
      case "$target" in
        /mnt/*)  # a usb_roots folder: the USB watcher would take the disk for a stick
          say "note: $target ($((avail / 1073741824)) GiB free) is not used: it is under /mnt," \
            "which the appliance scans for USB sticks; mount that disk at /data instead"
          continue ;;
        /media|/media/*|/run|/run/*|/mnt|/boot|/boot/*|/snap/*) continue ;;
      esac
      case ",$options," in *,ro,*) continue ;; esac
      if [ "$avail" -gt "$best_avail" ]; then best="$target" best_avail="$avail"; fi
    done < <(mounts)
    if [ -z "$best" ] || [ "$best" = / ]; then
      DATA_DIR=/var/lib/appliance
      best=/
    else
      DATA_DIR="$best/appliance-data"
    fi
    if [ "$best_avail" -ge 0 ]; then
      say "data: $DATA_DIR (largest writable disk: $best, $((best_avail / 1073741824)) GiB free)"
    else
      say "data: $DATA_DIR (no disk list available)"
    fi
  fi
  case "$DATA_DIR" in /media/*|/run/media/*|/mnt/*)
    refuse "the data directory $DATA_DIR is under a removable-media root the USB watcher scans" ;;
  esac
  check_mount_options
}

# Power-cut safety of the data directory's filesystem (see jetson/README.md).
check_mount_options() {
  local line target fstype avail options best_len=-1
  while read -r target fstype avail options; do
    case "$DATA_DIR/" in "${target%/}/"*)
      if [ "${#target}" -gt "$best_len" ]; then best_len=${#target} line="$fstype $options"; fi ;;
    esac
  done < <(mounts)
  [ -n "${line:-}" ] || return 0
  case ",${line#* }," in
    *,nobarrier,*|*,barrier=0,*|*,data=writeback,*)
      say "note: the data disk is mounted with ${line#* }: a power cut can lose acknowledged" \
        "images. Remove nobarrier/barrier=0/data=writeback from /etc/fstab (jetson/README.md)." ;;
  esac
}

make_data_dir() {
  if [ -d "$(at "$DATA_DIR")" ]; then
    say "data: $DATA_DIR exists"
  else
    say "data: create $DATA_DIR"
  fi
  if [ "$DRY_RUN" = 0 ]; then
    mkdir -p "$(at "$DATA_DIR")"
    chmod 0700 "$(at "$DATA_DIR")"
  fi
  run chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
}

# --- files -----------------------------------------------------------------------------

render() {
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@DATA_DIR@|$DATA_DIR|g" -e "s|@USER@|$SERVICE_USER|g" \
    -e "s|@KIOSK_USER@|$KIOSK_USER|g" -e "s|@PORT@|$PORT|g" "$1"
}

# install_file SOURCE TARGET MODE: render SOURCE's placeholders and write it if it changed.
install_file() {
  local source="$1" target="$2" mode="$3" dest tmp
  dest="$(at "$target")"
  tmp="$(mktemp)"
  render "$source" >"$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    say "unchanged: $target"
    rm -f "$tmp"
    return
  fi
  CHANGED+=("$target")
  if [ "$DRY_RUN" = 1 ]; then
    say "would write: $target"
    rm -f "$tmp"
    return
  fi
  say "write: $target"
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$tmp" "$dest"
  rm -f "$tmp"
}

write_text() {  # write_text TARGET MODE TEXT
  local tmp
  tmp="$(mktemp)"
  printf '%s\n' "$3" >"$tmp"
  install_file "$tmp" "$1" "$2"
  rm -f "$tmp"
}

install_files() {
  write_text /etc/appliance/appliance.env 0644 "# written by jetson/install.sh; settings go in $DATA_DIR/config.toml
APPLIANCE_DATA_DIR=$DATA_DIR"
  install_file "$HERE/README.md" "$PREFIX/README.md" 0644
  local script
  for script in appliance-eject appliance-usb-mount appliance-power-mode appliance-kiosk; do
    install_file "$HERE/bin/$script" "$PREFIX/bin/$script" 0755
  done
  install_file "$HERE/systemd/appliance.service" /etc/systemd/system/appliance.service 0644
  install_file "$HERE/systemd/appliance-usb-mount@.service" \
    /etc/systemd/system/appliance-usb-mount@.service 0644
  install_file "$HERE/systemd/journald-appliance.conf" \
    /etc/systemd/journald.conf.d/appliance.conf 0644
  install_file "$HERE/udev/90-appliance-usb.rules" /etc/udev/rules.d/90-appliance-usb.rules 0644
  # polkit >= 0.106 reads JavaScript rules; 0.105 (Ubuntu 22.04, JetPack 6) reads .pkla
  install_file "$HERE/polkit/50-appliance-udisks.rules" \
    /etc/polkit-1/rules.d/50-appliance-udisks.rules 0644
  install_file "$HERE/polkit/50-appliance-udisks.pkla" \
    /etc/polkit-1/localauthority/50-local.d/50-appliance-udisks.pkla 0644
  if [ "$PLATFORM" = jetson ]; then
    install_file "$HERE/systemd/appliance-power-mode.service" \
      /etc/systemd/system/appliance-power-mode.service 0644
  fi
  if [ "$KIOSK" = 1 ]; then
    install_file "$HERE/kiosk/session" "$PREFIX/kiosk/session" 0755
    install_file "$HERE/systemd/appliance-kiosk.service" \
      /etc/systemd/system/appliance-kiosk.service 0644
    write_text /etc/appliance/kiosk.env 0644 "KIOSK_URL=http://127.0.0.1:$PORT/"
    install_file "$HERE/kiosk/Xwrapper.config" /etc/X11/Xwrapper.config 0644
  fi
}

# --- Python ----------------------------------------------------------------------------

install_python() {
  local venv="$PREFIX/venv" target="$SOURCE" pip_opts=(--upgrade)
  if [ -n "$WHEELHOUSE" ]; then pip_opts+=(--no-index --find-links "$WHEELHOUSE"); fi
  if [ -x "$(at "$venv/bin/python")" ]; then
    say "pip: venv $venv exists"
  else
    # why --system-site-packages: JetPack's tensorrt is a system (apt) package
    run python3 -m venv --system-site-packages "$venv"
  fi
  if [ "$PLATFORM" = jetson ] && [ "$CPU_ONLY" = 0 ]; then
    local cuda_root="/usr/local/cuda-$CUDA" marker="$venv/pycuda-built-for" rebuild=()
    # pycuda from source against JetPack's CUDA (PyPI has no Jetson build of it); pip
    # would keep a pycuda built for an older CUDA after a JetPack upgrade, hence the marker
    if [ "$(cat "$(at "$marker")" 2>/dev/null)" != "cuda-$CUDA" ]; then
      rebuild=(--force-reinstall)
    fi
    say "pip: pycuda built from source against $cuda_root"
    run env "CUDA_ROOT=$cuda_root" "PATH=$cuda_root/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      "CPATH=$cuda_root/include" \
      "LIBRARY_PATH=$cuda_root/lib64:$cuda_root/lib64/stubs" \
      "$venv/bin/pip" install "${pip_opts[@]}" "${rebuild[@]}" --no-binary pycuda "pycuda>=2024.1"
    if [ "$LIVE" = 1 ]; then echo "cuda-$CUDA" >"$marker"; fi
    if [ "$LIVE" = 0 ] || "$venv/bin/python" -c \
      'import importlib.metadata as m; m.version("tensorrt")' 2>/dev/null; then
      target="${SOURCE}[tensorrt]"
    else
      # JetPack's python3-libnvinfer ships no pip metadata on some releases; the
      # extra would then fetch PyPI's tensorrt, which is not built for Jetson.
      say "note: JetPack's tensorrt has no pip metadata: installing without the extra"
    fi
  fi
  say "pip: install $target"
  run "$venv/bin/pip" install "${pip_opts[@]}" "$target"
  if [ "$PLATFORM" = jetson ] && [ "$CPU_ONLY" = 0 ]; then
    run "$venv/bin/python" -c 'import tensorrt, pycuda.driver; print("tensorrt", tensorrt.__version__)'
  fi
  run ln -sfn "$venv/bin/appliance" /usr/local/bin/appliance
  run ln -sfn "$PREFIX/bin/appliance-eject" /usr/local/bin/appliance-eject
}

# --- services --------------------------------------------------------------------------

changed() { [[ " ${CHANGED[*]} " == *" $1 "* ]]; }

enable_services() {
  local units=(appliance.service)
  [ "$PLATFORM" = jetson ] && units+=(appliance-power-mode.service)
  if [ "$KIOSK" = 1 ]; then
    units+=(appliance-kiosk.service)
    # the kiosk is the screen: a desktop login would fight it for the display
    if [ -e "$(at /etc/systemd/system/display-manager.service)" ]; then
      run systemctl disable display-manager.service
    fi
  fi
  run systemctl daemon-reload
  if changed /etc/udev/rules.d/90-appliance-usb.rules; then run udevadm control --reload; fi
  if changed /etc/systemd/journald.conf.d/appliance.conf; then
    run systemctl restart systemd-journald.service
  fi
  run systemctl enable "${units[@]}"
  if [ "$PLATFORM" = jetson ]; then
    # the helper resolves a mode name through /etc/nvpmodel.conf and reads the setting
    local power=("$PREFIX/bin/appliance-power-mode")
    if [ "$LIVE" = 0 ]; then power=("$HERE/bin/appliance-power-mode" --dry-run --root "${ROOT:-/}"); fi
    power+=(--data-dir "$DATA_DIR")
    if [ -n "$POWER_MODE" ]; then power+=("$POWER_MODE"); fi
    "${power[@]}" || say "note: the power mode was not set (see above)"
  fi
  # restart, not start: an upgrade must load the new code
  run systemctl restart appliance.service
  if [ "$KIOSK" = 1 ]; then run systemctl restart appliance-kiosk.service; fi
}

main() {
  if [ "$LIVE" = 1 ] && [ "$(id -u)" != 0 ]; then
    refuse "run as root (sudo $0), or use --dry-run to see the plan"
  fi
  detect
  CHANGED=()
  choose_data_dir
  install_apt
  ensure_users
  make_data_dir
  install_files
  install_python
  enable_services
  if [ "$LIVE" = 1 ]; then
    runuser -u "$SERVICE_USER" -- env APPLIANCE_DATA_DIR="$DATA_DIR" \
      "$PREFIX/venv/bin/appliance" doctor ||
      say "note: appliance doctor reports a problem (above); see jetson/README.md"
  fi
  say "done: $PLATFORM${JETPACK:+ (JetPack $JETPACK)}, data in $DATA_DIR," \
    "${#CHANGED[@]} files changed, web page http://127.0.0.1:$PORT/"
}

main

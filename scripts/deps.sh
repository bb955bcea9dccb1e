# Sourced by scripts/check and scripts/demo: installs, with apt-get, whatever
# of the Debian 12 packages below is missing. Nothing else is downloaded.
# shellcheck shell=bash

KRTIOT_BUILD_DEPS="meson ninja-build pkg-config gcc libc6-dev libmosquitto-dev libcurl4-openssl-dev
libjson-c-dev libsystemd-dev libconfig-dev libssl-dev scdoc dpkg-dev debhelper fakeroot"
KRTIOT_TEST_DEPS="mosquitto mosquitto-clients nginx-light python3 python3-pytest python3-paho-mqtt
strace openssl cpio swupdate rauc dbus squashfs-tools systemd-container debootstrap lintian
cppcheck clang-tidy clang libclang-rt-14-dev curl time tzdata"

krtiot_install_deps() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> Installing missing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "    (not root: run as root, or install them yourself)" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

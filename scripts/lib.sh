# shellcheck shell=bash
# Shared by scripts/*.sh: locating the source tree and installing missing
# Debian/Ubuntu packages.  Sourced, not run.

SAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# sal_help_requested "$@" : if the first argument is -h or --help, print the
# calling script's header comment (its usage) and exit 0, before anything is
# installed or built.
sal_help_requested() {
    case "${1:-}" in
        -h|--help)
            sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
    esac
}

# How many parallel build jobs.
sal_jobs() {
    nproc 2>/dev/null || echo 2
}

# sal_need_packages PKG... : install the named Debian packages with apt-get
# when running as root or when sudo works without a password; otherwise
# print the command to run and exit 1.
sal_need_packages() {
    [ "$#" -gt 0 ] || return 0
    local apt="apt-get"
    local install_cmd="apt-get install -y --no-install-recommends $*"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing packages: $*" >&2
        echo "This script installs them only with apt-get (Debian/Ubuntu)." >&2
        echo "Install the equivalent packages with your package manager." >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        apt="apt-get"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        apt="sudo apt-get"
    else
        echo "error: missing packages: $*" >&2
        echo "Install them with:" >&2
        echo "    sudo apt-get update && sudo $install_cmd" >&2
        exit 1
    fi
    echo "==> installing missing packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    $apt update -q
    $apt install -y -q --no-install-recommends "$@"
}

# Packages needed to build the library and the examples.
sal_build_packages() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 \
        && ! command -v clang >/dev/null 2>&1; then
        missing+=(gcc libc6-dev)
    fi
    command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 \
        || missing+=(make)
    echo "${missing[@]}"
}

# 0 if the CMocka development files are installed.
sal_have_cmocka() {
    if command -v pkg-config >/dev/null 2>&1 \
        && pkg-config --exists cmocka 2>/dev/null; then
        return 0
    fi
    [ -f /usr/include/cmocka.h ]
}

# The binary directory of a configure preset (see CMakePresets.json).
sal_preset_dir() {
    case "$1" in
        default) echo "$SAL_ROOT/build" ;;
        *) echo "$SAL_ROOT/build-$1" ;;
    esac
}

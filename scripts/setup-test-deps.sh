#!/usr/bin/env bash
# Installs what the end-to-end tests (tests/e2e) need, and nothing that is
# already there. Idempotent: a second run changes nothing and takes a second.
#
# Needed: python3 with pytest, pytest-timeout and boto3; the AWS CLI (v1,
# `aws`); curl (a provided.al2023 test speaks the Runtime API with it; the test
# falls back to python when curl is missing, but the suite is meant to run
# both); node (the nodejs runtime tests); as root, nft and ip (sandbox egress
# and its tests).
#
# Debian 12 machines of this kind have a pyenv Python with boto3 and awscli;
# on a bare Debian 12 the system python3 is "externally managed" (PEP 668),
# so there the Debian packages are used instead of pip.
set -euo pipefail

PY=${PYTHON:-python3}
log() { printf 'setup-test-deps: %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
    # Installs the given Debian packages that are not installed yet.
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        log "missing ${missing[*]} and no apt-get; install them by hand"
        return 1
    fi
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if [ $apt_updated -eq 0 ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if ! command -v "$PY" >/dev/null; then
    apt_install python3 python3-pip
    PY=python3
fi

# python module -> pip distribution -> Debian package
want=(
    "pytest pytest python3-pytest"
    "pytest_timeout pytest-timeout python3-pytest-timeout"
    "boto3 boto3 python3-boto3"
)
pip_missing=()
deb_missing=()
for entry in "${want[@]}"; do
    read -r mod dist deb <<<"$entry"
    if ! "$PY" -c "import $mod" 2>/dev/null; then
        pip_missing+=("$dist")
        deb_missing+=("$deb")
    fi
done
if [ ${#pip_missing[@]} -gt 0 ]; then
    log "pip install ${pip_missing[*]}"
    if ! "$PY" -m pip install -q "${pip_missing[@]}"; then
        # PEP 668 (a system python3) or no pip: use Debian's packages.
        log "pip refused; using Debian packages ${deb_missing[*]}"
        apt_install "${deb_missing[@]}"
    fi
fi

if ! command -v aws >/dev/null; then
    log "installing the AWS CLI"
    if "$PY" -m pip install -q awscli; then
        # pyenv only puts a new console script on PATH after a rehash.
        command -v pyenv >/dev/null && pyenv rehash || true
    fi
    command -v aws >/dev/null || apt_install awscli
fi

command -v curl >/dev/null || apt_install curl
command -v node >/dev/null || apt_install nodejs
# Jailed functions' egress: the server installs its firewall with nft; the
# network tests build a "remote host" namespace with ip. Root only (CI is).
if [ "$(id -u)" -eq 0 ]; then
    command -v nft >/dev/null || [ -x /usr/sbin/nft ] || apt_install nftables
    command -v ip >/dev/null || [ -x /usr/sbin/ip ] || apt_install iproute2
fi

# Sanity check: everything imports now.
"$PY" -c 'import pytest, pytest_timeout, boto3' >/dev/null
aws --version >/dev/null 2>&1
log "ok ($("$PY" -m pytest --version 2>&1 | head -1); $(aws --version 2>&1 | cut -d' ' -f1))"

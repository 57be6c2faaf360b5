#!/bin/sh
# contrib/install-deps.sh - install the Debian packages dpctl's build, tests
# and demo need, only those missing.  Idempotent: a no-op (no apt-get at all)
# when everything is present.  Used by `make deps` (and so `make test`/`make demo`).
set -eu

PKGS="build-essential pkg-config
libyaml-dev libssh2-1-dev libcurl4-openssl-dev libjansson-dev libxml2-dev
libcmocka-dev libibverbs-dev
clang clang-format clang-tidy cppcheck libclang-rt-14-dev
librsvg2-bin iproute2 openssh-server openssh-client groff-base man-db openssl
chromium python3
slurmctld slurmd slurm-client munge
libopenmpi-dev openmpi-bin pdsh"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	echo "deps: all packages present"
	exit 0
fi
echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "deps: error: not root and no sudo; run as root: apt-get install$missing" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing

#!/usr/bin/env bash
# Installs what the test suite and benchmarks need on a Debian 12 machine:
#   - a C compiler and libzstd-dev (pitr's zstd encoder)
#   - PostgreSQL 15 server + client tools (initdb, pg_ctl, pg_basebackup, ...)
#   - pgBackRest (benchmarks compare against it)
#   - the unprivileged OS user "pitrtest" (PostgreSQL refuses to run as root)
#   - versitygw (S3-compatible test server), pinned version
#
# Idempotent and quiet: prints one line per thing it installs and nothing when
# everything is already present. Must run as root (or with sudo available).
set -euo pipefail

PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"
TEST_USER=pitrtest
TEST_HOME=/var/lib/pitrtest
VERSITYGW_PKG=github.com/versity/versitygw/cmd/versitygw
VERSITYGW_VERSION=v1.8.0

SUDO=()
if [[ ${EUID} -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo -n)
	else
		echo "install-deps: must run as root (or with sudo)" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_updated=0
apt_install() {
	# Installs the given packages (only those missing). Keeps any config file
	# already on disk (needed for createcluster.conf below).
	local missing=()
	local p
	for p in "$@"; do
		pkg_installed "$p" || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	if [[ ${apt_updated} -eq 0 ]]; then
		"${SUDO[@]}" apt-get update -qq >/dev/null
		apt_updated=1
	fi
	"${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" >/dev/null
	for p in "${missing[@]}"; do
		echo "install-deps: installed package ${p}"
	done
}

# make: .ci/run calls `make test`.
command -v make >/dev/null 2>&1 || apt_install make
# A C compiler and Debian's libzstd: pitr compresses with the C zstd library
# (the one PostgreSQL itself links); the Makefile builds against the system
# copy when pkg-config finds it. Without them pitr still builds, with a
# pure-Go encoder that is slower and writes a little more.
apt_install gcc libc6-dev libzstd-dev pkg-config

# PostgreSQL. Install postgresql-common first and switch off Debian's automatic
# "main" cluster (it would start a server on port 5432 that nothing uses); the
# test harness makes its own clusters with initdb.
if [[ ! -x "${PG_BIN}/postgres" ]] || ! pkg_installed "postgresql-${PG_MAJOR}"; then
	apt_install postgresql-common
	conf=/etc/postgresql-common/createcluster.conf
	if [[ -f ${conf} ]] && ! grep -Eq '^[[:space:]]*create_main_cluster[[:space:]]*=[[:space:]]*false' "${conf}"; then
		"${SUDO[@]}" sed -ri 's/^[#[:space:]]*(create_main_cluster)[[:space:]]*=.*$/\1 = false/' "${conf}"
		grep -Eq '^create_main_cluster = false' "${conf}" ||
			echo 'create_main_cluster = false' | "${SUDO[@]}" tee -a "${conf}" >/dev/null
	fi
	apt_install "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}"
fi
# Debian 12 ships contrib inside postgresql-15 (postgresql-contrib-15 is only a
# virtual package there); install it separately only where it is separate.
if [[ ! -f /usr/share/postgresql/${PG_MAJOR}/extension/pg_stat_statements.control ]]; then
	apt_install "postgresql-contrib-${PG_MAJOR}"
fi

# pgBackRest (benchmarks).
command -v pgbackrest >/dev/null 2>&1 || apt_install pgbackrest
# GNU time: make bench measures peak RSS of each tool with it.
[[ -x /usr/bin/time ]] || apt_install time

# A docker-compose.yml validator (TestComposeFileIsValid runs
# `docker compose config -q`, or `docker-compose config -q`; there is no
# Docker engine here, and none is needed to validate). Debian's
# docker-compose, where the package exists.
if ! { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; } &&
	! command -v docker-compose >/dev/null 2>&1; then
	if [[ ${apt_updated} -eq 0 ]]; then
		"${SUDO[@]}" apt-get update -qq >/dev/null
		apt_updated=1
	fi
	if apt-cache policy docker-compose 2>/dev/null | grep -Eq 'Candidate: [0-9]'; then
		apt_install docker-compose
	else
		echo "install-deps: no docker-compose package here; TestComposeFileIsValid will fail under CI=true" >&2
	fi
fi

# Unprivileged OS user that runs initdb/pg_ctl/postgres in tests.
if ! getent passwd "${TEST_USER}" >/dev/null; then
	"${SUDO[@]}" useradd --system --home-dir "${TEST_HOME}" --create-home \
		--shell /usr/sbin/nologin "${TEST_USER}"
	echo "install-deps: created user ${TEST_USER}"
fi

# versitygw (pinned).
if ! command -v go >/dev/null 2>&1; then
	echo "install-deps: go is not on PATH; cannot install versitygw" >&2
	exit 1
fi
gobin="$(go env GOBIN)"
[[ -n ${gobin} ]] || gobin="$(go env GOPATH)/bin"
if [[ ! -x ${gobin}/versitygw ]]; then
	go install "${VERSITYGW_PKG}@${VERSITYGW_VERSION}"
	echo "install-deps: installed versitygw ${VERSITYGW_VERSION} to ${gobin}"
fi

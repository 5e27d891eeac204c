#!/usr/bin/env bash
# The README's first command, the whole loop on the local file:// default:
# a throwaway PostgreSQL cluster archives its WAL with `pitr archive-push`,
# takes a base backup with `pitr backup`, commits a row every few seconds,
# and `pitr restore --target` brings it back to a chosen minute, printing
# which rows survived. Every archived segment is also fetched back with
# `pitr wal-fetch` and compared byte for byte.
#
# Everything lives in one temporary directory, removed at the end unless
# KEEP=1. Runs as root (PostgreSQL itself then runs as the pitrtest user) or as
# an ordinary user with the PostgreSQL 15 server binaries installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RUN_AS=()
if [[ ${EUID} -eq 0 ]]; then
	bash scripts/install-deps.sh
	RUN_AS=(runuser -u pitrtest --)
fi

say() { printf '\n==> %s\n' "$*"; }

WORK=$(mktemp -d /tmp/pitr-demo-XXXXXX)
chmod 0755 "${WORK}"
[[ ${EUID} -eq 0 ]] && chown pitrtest: "${WORK}"
cleanup() {
	"${RUN_AS[@]}" "${PG_BIN}/pg_ctl" -D "${WORK}/pgdata" -m immediate stop >/dev/null 2>&1 || true
	"${RUN_AS[@]}" "${PG_BIN}/pg_ctl" -D "${WORK}/restored" -m immediate stop >/dev/null 2>&1 || true
	if [[ ${KEEP:-0} == 1 ]]; then
		echo "kept ${WORK}"
	else
		rm -rf "${WORK}"
	fi
}
trap cleanup EXIT

say "building pitr"
# As the Makefile does: Debian's libzstd when installed (see install-deps.sh).
if pkg-config --exists libzstd 2>/dev/null && [[ ${GOFLAGS:-} != *external_libzstd* ]]; then
	export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-tags=external_libzstd"
fi
go build -o "${WORK}/pitr" ./cmd/pitr
PITR="${WORK}/pitr"
REPO="file://${WORK}/repo"
PORT=$((20000 + RANDOM % 20000))

say "creating a throwaway cluster in ${WORK}/pgdata (port ${PORT})"
"${RUN_AS[@]}" "${PG_BIN}/initdb" -D "${WORK}/pgdata" -A trust -U postgres --wal-segsize=16 >/dev/null
cat >>"${WORK}/pgdata/postgresql.conf" <<CONF
port = ${PORT}
listen_addresses = '127.0.0.1'
unix_socket_directories = '${WORK}'
archive_mode = on
archive_command = '${PITR} archive-push --repo ${REPO} %p'
wal_keep_size = '1GB'
CONF
"${RUN_AS[@]}" "${PG_BIN}/pg_ctl" -D "${WORK}/pgdata" -l "${WORK}/server.log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=${PORT} PGUSER=postgres PGDATABASE=postgres

say "writing data with pgbench (scale 5) and switching WAL"
"${RUN_AS[@]}" env PGHOST=127.0.0.1 PGPORT="${PORT}" "${PG_BIN}/pgbench" -U postgres -i -s 5 -q postgres 2>&1 | tail -1
last=$("${RUN_AS[@]}" "${PG_BIN}/psql" -h 127.0.0.1 -p "${PORT}" -U postgres -XAtc \
	"SELECT pg_walfile_name(pg_switch_wal())" postgres)

say "waiting until PostgreSQL has archived ${last}"
for _ in $(seq 1 120); do
	[[ -f "${WORK}/pgdata/pg_wal/archive_status/${last}.done" ]] && break
	sleep 0.5
done
[[ -f "${WORK}/pgdata/pg_wal/archive_status/${last}.done" ]] || {
	echo "archiving did not finish; server log:"; tail -20 "${WORK}/server.log"; exit 1
}
"${RUN_AS[@]}" "${PG_BIN}/psql" -h 127.0.0.1 -p "${PORT}" -U postgres -XAc \
	"SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver" postgres
echo "server log (archive-push writes one line per segment):"
grep 'msg=archived' "${WORK}/server.log" | tail -3

say "taking a base backup into the repository"
"${RUN_AS[@]}" "${PITR}" backup --repo "${REPO}" --fast --dsn "host=127.0.0.1 port=${PORT} user=postgres dbname=postgres" --log-level warn
"${RUN_AS[@]}" "${PITR}" backup list --repo "${REPO}"

SECONDS_OF_ROWS=${DEMO_SECONDS:-75}
say "committing a row every 5 seconds for ${SECONDS_OF_ROWS} seconds"
psql_src() { "${RUN_AS[@]}" "${PG_BIN}/psql" -h 127.0.0.1 -p "${PORT}" -U postgres -qXAt "$@" postgres; }
psql_src -c "CREATE TABLE events (id serial PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())"
end=$((SECONDS + SECONDS_OF_ROWS))
while ((SECONDS < end)); do
	psql_src -c "INSERT INTO events (note) VALUES ('row written at ' || to_char(clock_timestamp(), 'HH24:MI:SS'))"
	sleep 5
done
psql_src -c "SELECT id, note FROM events ORDER BY id" | sed 's/^/  /'
# The target: the first whole minute after the first row, in this machine's zone.
first=$(psql_src -c "SELECT extract(epoch FROM min(at))::bigint FROM events")
target_epoch=$(((first / 60 + 1) * 60))
if ((target_epoch >= $(psql_src -c "SELECT extract(epoch FROM max(at))::bigint FROM events"))); then
	target_epoch=$((first + SECONDS_OF_ROWS / 2))
fi
TARGET=$(date -d "@${target_epoch}" '+%Y-%m-%d %H:%M:%S')
last=$(psql_src -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 120); do
	[[ -f "${WORK}/pgdata/pg_wal/archive_status/${last}.done" ]] && break
	sleep 0.5
done

say "restoring to ${TARGET} ($(date +%Z)) into ${WORK}/restored and starting it"
RPORT=$((PORT + 1))
"${RUN_AS[@]}" "${PITR}" restore --repo "${REPO}" --log-level warn --target "${TARGET}" \
	--pgdata "${WORK}/restored" --start --port "${RPORT}"
echo "rows that survived in the restored cluster (everything committed up to ${TARGET}):"
"${RUN_AS[@]}" "${PG_BIN}/psql" -h 127.0.0.1 -p "${RPORT}" -U postgres -XAt -c "SELECT id, note FROM events ORDER BY id" postgres | sed 's/^/  /'
"${RUN_AS[@]}" "${PG_BIN}/pg_ctl" -D "${WORK}/restored" -m fast stop >/dev/null

say "fetching every archived segment back with wal-fetch and comparing"
mkdir -p "${WORK}/fetched"
[[ ${EUID} -eq 0 ]] && chown pitrtest: "${WORK}/fetched"
n=0 orig=0
for done in "${WORK}"/pgdata/pg_wal/archive_status/*.done; do
	name=$(basename "${done}" .done)
	[[ -f "${WORK}/pgdata/pg_wal/${name}" ]] || continue
	"${RUN_AS[@]}" "${PITR}" wal-fetch --repo "${REPO}" --log-level warn "${name}" "${WORK}/fetched/${name}"
	cmp -s "${WORK}/pgdata/pg_wal/${name}" "${WORK}/fetched/${name}" || { echo "MISMATCH: ${name}"; exit 1; }
	n=$((n + 1)) orig=$((orig + $(stat -c %s "${WORK}/fetched/${name}")))
done
stored=$(du -sb "${WORK}/repo" | cut -f1)
printf '%d segments (%d MiB) archived and fetched back byte-identical; repository holds %d MiB\n' \
	"${n}" $((orig >> 20)) $((stored >> 20))
echo "a file that was never archived exits 1, as restore_command must:"
set +e
"${RUN_AS[@]}" "${PITR}" wal-fetch --repo "${REPO}" 00000009.history "${WORK}/fetched/RECOVERYHISTORY"
echo "exit status $?"

// Package bench holds pitr's benchmarks; `make bench` runs both parts.
//
// cmd/walbench compares pitr with pgBackRest the way PostgreSQL calls them,
// one process per WAL segment, on a corpus of real WAL generated once by
// pgbench on PostgreSQL 15 and cached in bench/.cache (internal/corpus).
//
// The Go benchmarks in this package measure the codec and archive.Archiver
// Push/Fetch in process on segments of that corpus, with MB/s and
// allocations, so regressions show without processes:
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// They skip when the corpus has not been generated yet. Nothing here runs
// under `go test` without -bench.
//
// cmd/backupbench compares `pitr backup` with `pgbackrest backup` and
// `pitr restore --target TIME --start` with `pgbackrest restore --type=time`
// on a pgbench scale-50 cluster (cached in bench/.cache/pgbench-s50) with
// ~1 GiB of WAL to replay; `make bench` runs it last.
package bench

// Package bench holds pitr's benchmarks. `make bench` runs backupbench and
// then cmd/benchtable, which prints issue 6's one table (WAL push, backlog
// drain, fetch, prefetch, backup, restore; pitr vs pgBackRest's defaults and
// fastest settings; local and S3 over TLS). `make bench-details` runs
// walbench and the Go benchmarks.
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
// ~1 GiB of WAL to replay; its -json rows end up in benchtable's table.
package bench

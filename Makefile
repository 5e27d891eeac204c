# `make test` is what .ci/run and the README run.
# Tests that need CI semantics (fail instead of skip when PostgreSQL cannot
# run) read CI=true from the environment; nothing here sets it.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec

GO        ?= go
# Build against Debian's libzstd when it is there (scripts/install-deps.sh
# installs it): the library pgBackRest's zst and PostgreSQL use, with
# security updates from the distribution. Otherwise pitr compresses with the
# pure-Go encoder.
ZSTD_TAGS := $(shell pkg-config --exists libzstd 2>/dev/null && echo -tags=external_libzstd)
export GOFLAGS := $(strip $(GOFLAGS) $(ZSTD_TAGS))
PKGS      ?= ./...
TESTFLAGS ?=
TEST_TIMEOUT ?= 25m
BENCH     ?= .

.PHONY: all build demo test bench bench-details lint fuzz integration-compose clean

all: build

build:
	$(GO) build -o bin/pitr ./cmd/pitr

# The README's first command: a throwaway cluster archives into a file://
# repository and every segment is fetched back and compared.
demo:
	bash scripts/demo.sh

# go vet, then all tests. Output stays quiet: one line per package, the full
# output of failing tests only, the list of skipped tests with reasons, and a
# closing "tests: N passed, N failed, N skipped" line.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -json $(TESTFLAGS) $(PKGS) 2>&1 | $(GO) run ./scripts/testsummary

# Issue 6's table: pitr vs pgBackRest (its defaults and its fastest
# settings), to a local repository and to versitygw over TLS: sequential
# push, backlog drain, sequential fetch, fetch with prefetch, backup,
# restore to a target time; wall time, MB/s, CPU, peak RSS, stored bytes,
# ratio; median of RUNS (default 3). backupbench measures backup and
# restore of a pgbench scale-50 database (cached in bench/.cache; its
# detailed report is saved, the path is printed), then benchtable the WAL
# rows on a corpus of real WAL (cached in bench/.cache) and prints the one
# table. QUICK=1: a validation run (16 segments, one run of everything).
# S3=0 leaves out the S3 rows. backupbench runs twice: local, then -s3.
# BACKUPBENCHFLAGS go to backupbench (-h; -profile DIR adds CPU profiles),
# BENCHTABLEFLAGS to benchtable (-h).
# make bench-details: the older per-invocation comparison (walbench, with
# p95 and fixed costs; BENCHFLAGS) and the in-process Go benchmarks (BENCH).
RUNS ?= 3
QUICK ?=
S3 ?= 1
comma := ,
BENCHFLAGS ?=
BACKUPBENCHFLAGS ?=
BENCHTABLEFLAGS ?=
bench:
	@command -v pgbackrest >/dev/null 2>&1 && [[ -x /usr/lib/postgresql/15/bin/pgbench ]] || bash scripts/install-deps.sh
	@[[ -x /usr/bin/time ]] || { echo "make bench: needs GNU time for peak RSS (apt-get install time)" >&2; exit 1; }
	@out="$$(mktemp -d /tmp/pitr-bench-results-XXXXXX)"; \
	echo "make bench: backupbench's report goes to $$out/backupbench.txt"; \
	$(GO) run ./bench/cmd/backupbench $(if $(QUICK),-quick,-rounds $(RUNS) -restore-rounds $(RUNS)) -json "$$out/backupbench.json" $(BACKUPBENCHFLAGS) > "$$out/backupbench.txt"; \
	$(if $(filter 1,$(S3)),$(GO) run ./bench/cmd/backupbench -s3 $(if $(QUICK),-quick,-rounds $(RUNS) -restore-rounds $(RUNS)) -json "$$out/backupbench-s3.json" $(BACKUPBENCHFLAGS) > "$$out/backupbench-s3.txt";) \
	$(GO) run ./bench/cmd/benchtable $(if $(QUICK),-quick,-runs $(RUNS)) -s3=$(if $(filter 1,$(S3)),true,false) -backup-json "$$out/backupbench.json$(if $(filter 1,$(S3)),$(comma)$$out/backupbench-s3.json)" $(BENCHTABLEFLAGS) | tee "$$out/table.txt"; \
	echo "make bench: table saved in $$out/table.txt"

bench-details:
	@command -v pgbackrest >/dev/null 2>&1 && [[ -x /usr/lib/postgresql/15/bin/pgbench ]] || bash scripts/install-deps.sh
	$(GO) run ./bench/cmd/walbench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count=1 ./bench/...

# Every Fuzz* target (in a *_fuzz_test.go next to the parser it feeds:
# WAL names, .history, backup_label, backup_manifest, tablespace_map, object
# format, backup.json, the marker, target times) for FUZZTIME each, one
# after the other. Their seed corpora (f.Add, and testdata/fuzz where a
# past failure is kept) run as ordinary tests in make test.
# FUZZPARALLEL limits the fuzzing workers (default: one per CPU).
FUZZTIME ?= 30s
FUZZPARALLEL ?=
fuzz:
	@for f in $$(grep -rl --include='*_fuzz_test.go' '^func Fuzz' . | sort); do \
		dir=$$(dirname "$$f"); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
			echo "make fuzz: $$dir $$t for $(FUZZTIME)"; \
			$(GO) test "$$dir" -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $(if $(FUZZPARALLEL),-parallel $(FUZZPARALLEL)); \
		done; \
	done

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './vendor/*'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# The integration suite in containers (docker-compose.yml: a PostgreSQL
# service, a versitygw S3 service and a runner built from
# integration/Dockerfile that runs make test). Needs a Docker engine; works
# with the compose plugin (docker compose) or the standalone docker-compose.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
integration-compose:
	$(COMPOSE) build tests
	$(COMPOSE) run --rm tests || status=$$?; $(COMPOSE) down -v; exit $${status:-0}

clean:
	rm -rf bin

# `make test` is what .ci/run and the README run.
# Tests that need CI semantics (fail instead of skip when PostgreSQL cannot
# run) read CI=true from the environment; nothing here sets it.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec

GO        ?= go
PKGS      ?= ./...
TESTFLAGS ?=
TEST_TIMEOUT ?= 25m
BENCH     ?= .

.PHONY: all build demo test bench lint integration-compose clean

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

# pitr vs pgBackRest, one process per WAL segment as PostgreSQL runs them,
# on a corpus of real WAL from pgbench (generated on the first run, ~3 min,
# then cached in bench/.cache), followed by the in-process Go benchmarks
# (codec, archive.Archiver) on the same WAL. BENCHFLAGS go to walbench
# (go run ./bench/cmd/walbench -h); BENCH selects the Go benchmarks.
# Then backupbench: base backup and point-in-time restore of a pgbench
# scale-50 database, pitr vs pgBackRest (~4 min; the cluster is cached in
# bench/.cache/pgbench-s50). BACKUPBENCHFLAGS go to it
# (go run ./bench/cmd/backupbench -h; -profile DIR adds CPU profiles).
BENCHFLAGS ?=
BACKUPBENCHFLAGS ?=
bench:
	@command -v pgbackrest >/dev/null 2>&1 && [[ -x /usr/lib/postgresql/15/bin/pgbench ]] || bash scripts/install-deps.sh
	$(GO) run ./bench/cmd/walbench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count=1 ./bench/...
	@[[ -x /usr/bin/time ]] || { echo "make bench: backupbench needs GNU time for peak RSS (apt-get install time)" >&2; exit 1; }
	$(GO) run ./bench/cmd/backupbench $(BACKUPBENCHFLAGS)

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

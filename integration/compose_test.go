package integration

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// The suite tests against the server programs of one PostgreSQL major
// version: the server named by PITR_TEST_PG_DSN (the docker compose
// postgres service), or natively a cluster the harness starts, must be of
// that version.
func TestServerVersionMatchesBinaries(t *testing.T) {
	t.Parallel()
	want, err := pgtest.BinMajorVersion()
	if err != nil {
		t.Fatalf("server programs: %v", err)
	}
	dsn := os.Getenv("PITR_TEST_PG_DSN")
	where := "PITR_TEST_PG_DSN"
	if dsn == "" {
		c := pgtest.NewCluster(t, pgtest.Options{})
		c.Start(t)
		dsn, where = c.DSN(), "a cluster the harness started"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var conn *pgx.Conn
	for {
		conn, err = pgx.Connect(ctx, dsn)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second) // the service may still be starting
	}
	if err != nil {
		t.Fatalf("connect to %s (%s): %v", where, dsn, err)
	}
	defer conn.Close(context.Background())
	var num string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')").Scan(&num); err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(num)
	if got := n / 10000; got != want {
		t.Fatalf("the PostgreSQL server of %s is version %d (server_version_num %s), the harness's programs are %d", where, got, num, want)
	}
}

// composeValidator returns the command that validates a compose file: the
// docker compose plugin if present, else Debian's docker-compose
// (scripts/install-deps.sh installs it). None: skipped, except under
// CI=true, where it fails.
func composeValidator(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err == nil && exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("neither `docker compose` nor `docker-compose` is installed (scripts/install-deps.sh installs Debian's docker-compose)")
	}
	t.Skip("neither `docker compose` nor `docker-compose` is installed (run scripts/install-deps.sh)")
	return nil
}

// docker-compose.yml is valid (docker compose config -q), has the three
// services make integration-compose needs, and gives the runner the
// environment variables the harness reads: the compose mode runs the same
// code path as the native one.
func TestComposeFileIsValid(t *testing.T) {
	t.Parallel()
	compose := composeValidator(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(compose[0], append(append(compose[1:], "-f", "../docker-compose.yml", "--project-directory", ".."), args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", strings.Join(compose, " "), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("config", "-q")
	services := strings.Fields(run("config", "--services"))
	for _, want := range []string{"postgres", "s3", "tests"} {
		if !strings.Contains(" "+strings.Join(services, " ")+" ", " "+want+" ") {
			t.Fatalf("docker-compose.yml has services %v, want %s", services, want)
		}
	}
	full := run("config")
	for _, want := range []string{"PITR_TEST_S3_ENDPOINT", "PITR_TEST_S3_BUCKET", "PITR_S3_ALLOW_HTTP", "PITR_TEST_PG_DSN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "integration/Dockerfile"} {
		if !strings.Contains(full, want) {
			t.Errorf("docker-compose.yml does not set %s for the tests service", want)
		}
	}
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pitr-dev/pitr/storage/crypt"
)

// DefaultConfigFile is read when neither --config nor PITR_CONFIG names a
// file; its absence is not an error.
const DefaultConfigFile = "/etc/pitr/pitr.yaml"

// Config is everything pitr can be told. Each field is settable in the config
// file (yaml key), the environment (PITR_ + upper-case key) and, unless it is
// a secret, by flag (--key with dashes); flags override the environment,
// which overrides the file. The `doc` tags are the documentation printed by
// `pitr help config` and copied into the README.
type Config struct {
	Repo             string `yaml:"repo" doc:"repository URL: file:///path or s3://bucket/prefix"`
	S3Endpoint       string `yaml:"s3_endpoint" doc:"S3 endpoint URL for S3-compatible servers (default: AWS_ENDPOINT_URL_S3, else AWS)"`
	S3Region         string `yaml:"s3_region" doc:"S3 region (default: AWS_REGION, else us-east-1)"`
	S3ForcePathStyle bool   `yaml:"s3_force_path_style" doc:"use path-style S3 URLs (implied by s3_endpoint)"`
	S3AccessKeyID    string `yaml:"s3_access_key_id" secret:"true" doc:"S3 access key (default: the AWS credential chain, e.g. AWS_ACCESS_KEY_ID)"`
	S3SecretKey      string `yaml:"s3_secret_access_key" secret:"true" doc:"S3 secret key (default: the AWS credential chain)"`
	S3AllowHTTP      bool   `yaml:"s3_allow_http" doc:"allow a plain http:// s3_endpoint on another machine (loopback is always allowed); otherwise https is required"`
	S3SSE            string `yaml:"s3_sse" doc:"server-side encryption of every object written: AES256 (SSE-S3) or aws:kms (SSE-KMS); default: the bucket's setting"`
	S3SSEKMSKeyID    string `yaml:"s3_sse_kms_key_id" doc:"KMS key id or ARN for s3_sse: aws:kms (default: the account's aws/s3 key)"`
	S3ObjectLockMode string `yaml:"s3_object_lock_mode" doc:"S3 Object Lock retention mode for every object written: GOVERNANCE or COMPLIANCE (the bucket must have Object Lock enabled); needs s3_object_lock_days"`
	S3ObjectLockDays int    `yaml:"s3_object_lock_days" doc:"days each written object stays undeletable and unchangeable under s3_object_lock_mode; keep it below your retention (prune skips locked objects)"`
	Compression      string `yaml:"compression" doc:"zstd (default) or none"`
	CompressionLevel int    `yaml:"compression_level" doc:"1 (fastest) to 4 (smallest): zstd levels 1, 3 (with smaller tables, tuned for WAL), 7 and 11; default 2"`
	LogLevel         string `yaml:"log_level" doc:"debug, info (default), warn or error"`
	LogFormat        string `yaml:"log_format" doc:"text (default) or json"`
	ArchiveAhead     string `yaml:"archive_ahead" doc:"how many ready WAL files archive-push's background archiver archives concurrently when it finds a backlog: a number, default half the CPUs (2 to 8), or off"`
	FetchAhead       string `yaml:"fetch_ahead" doc:"how many segments after the one asked for wal-fetch downloads ahead, in the background, during recovery: a number, or off; by default 8, or fewer for segments over 16 MiB (128 MiB of them, at least one)"`

	DSN                  string `yaml:"dsn" doc:"libpq connection string of the server pitr backup copies (default: PGHOST, PGPORT, PGUSER, ... environment); a password in it reaches pg_basebackup and pg_dump as PGPASSWORD, never on their command lines; put it in the config file, PITR_DSN, PGPASSWORD or ~/.pgpass, not --dsn"`
	PGBin                string `yaml:"pg_bin" doc:"directory of pg_basebackup, which must match the server's major version (default /usr/lib/postgresql/<major>/bin)"`
	BackupFastCheckpoint bool   `yaml:"backup_fast_checkpoint" doc:"start backups with an immediate checkpoint instead of a spread one (pitr backup --fast)"`
	BackupMaxRate        string `yaml:"backup_max_rate" doc:"limit the backup transfer rate, pg_basebackup -r syntax in kB/s (e.g. 51200 or 50M); default unlimited"`
	StreamSlot           string `yaml:"stream_slot" doc:"physical replication slot pitr stream uses, created if missing (default pitr)"`
	StreamInterval       string `yaml:"stream_interval" doc:"how often pitr stream uploads the WAL segment in progress as .partial: the most a crash loses (default 10s)"`
	Stream               bool   `yaml:"stream" doc:"pitr agent also runs pitr stream (continuous WAL streaming from dsn)"`
	BackupWALTimeout     string `yaml:"backup_wal_timeout" doc:"how long a backup waits for its WAL to reach the repository before failing (default 5m)"`

	Keep            int    `yaml:"keep" doc:"pitr prune keeps the newest N backups (and the WAL they need)"`
	KeepWithin      string `yaml:"keep_within" doc:"pitr prune keeps backups that ended within this long, e.g. 30d or 36h (and the newest before it)"`
	IncompleteAfter string `yaml:"incomplete_after" doc:"pitr prune deletes backups that never completed once unchanged this long (default 24h)"`
	Schedule        string `yaml:"schedule" doc:"pitr agent's backup schedule: an interval since the last backup (7d, 24h) or cron 'M H DOM MON DOW' in local time (default 7d)"`

	DumpSchedule   string `yaml:"dump_schedule" doc:"pitr agent's schedule for logical dumps of every database: an interval since the last dump (1d) or cron 'M H DOM MON DOW'; off (the default) disables"`
	DumpScheduleDB string `yaml:"dump_schedule_db" doc:"per-database dump schedules that override dump_schedule, db=schedule entries separated by ';', e.g. 'busy=1h; reports=0 2 * * 0'; a database set to off is not dumped on a schedule"`
	DumpKeep       int    `yaml:"dump_keep" doc:"pitr prune keeps the newest N dumps of each database"`
	DumpKeepWithin string `yaml:"dump_keep_within" doc:"pitr prune keeps dumps that ended within this long, e.g. 30d; with neither dump_keep nor dump_keep_within, dumps are never pruned"`

	DrillSchedule  string `yaml:"drill_schedule" doc:"pitr agent's drill schedule: an interval since the last drill (30d) or cron 'M H DOM MON DOW'; off disables (default 30d)"`
	DrillScratch   string `yaml:"drill_scratch" doc:"directory in which pitr drill and the agent's drills create their scratch directory (default $TMPDIR); needs room for a restored cluster"`
	MetricsAddress string `yaml:"metrics_address" doc:"pitr agent serves Prometheus metrics on this address at /metrics, e.g. 127.0.0.1:9187 (default: off)"`
	NotifyURL      string `yaml:"notify_url" secret:"true" doc:"pitr agent POSTs JSON (with a Slack-compatible text field) here when a scheduled backup, prune or drill fails"`
	NotifySuccess  bool   `yaml:"notify_success" doc:"also send successful runs to notify_url"`
	DeadmanURL     string `yaml:"deadman_url" secret:"true" doc:"pitr agent GETs this URL after each successful scheduled backup or drill (a dead man's switch such as healthchecks.io), so silence raises an alarm"`

	EncryptionRecipients   string `yaml:"encryption_recipients" doc:"encrypt the repository to these age public keys: age1... keys separated by commas, or a file of them, one a line; all the archiving host needs"`
	EncryptionIdentityFile string `yaml:"encryption_identity_file" doc:"file of age private keys (AGE-SECRET-KEY-1..., mode 0600) that decrypt the repository, for restore, drill and wal-fetch hosts; keep old keys in it after a rotation"`

	// File is the config file that was read, if any (not a setting).
	File string `yaml:"-"`
}

// configField describes one Config field for flags, env and docs.
type configField struct {
	key    string // yaml key
	env    string
	flag   string
	secret bool
	doc    string
	index  int
}

func configFields() []configField {
	t := reflect.TypeFor[Config]()
	out := make([]configField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("yaml")
		if key == "-" {
			continue
		}
		out = append(out, configField{
			key:    key,
			env:    "PITR_" + strings.ToUpper(key),
			flag:   strings.ReplaceAll(key, "_", "-"),
			secret: f.Tag.Get("secret") == "true",
			doc:    f.Tag.Get("doc"),
			index:  i,
		})
	}
	return out
}

// configFlags registers every non-secret Config field (plus --config) on fs
// and returns a function that, after fs.Parse, loads the effective Config.
//
// A command whose own flag has the name of a setting it does not use
// (drill's --keep is not prune's keep count) lists that setting in without;
// the setting still comes from the environment and the config file.
func configFlags(fs *flag.FlagSet, without ...string) func() (Config, error) {
	configPath := fs.String("config", "", "config file (default $PITR_CONFIG, else "+DefaultConfigFile+" if it exists)")
	set := map[string]*string{}
	for _, f := range configFields() {
		if f.secret || slices.Contains(without, f.key) {
			continue
		}
		set[f.key] = fs.String(f.flag, "", f.doc+" [$"+f.env+"]")
	}
	return func() (Config, error) {
		var cfg Config
		file, err := loadConfigFile(&cfg, *configPath)
		if err != nil {
			return cfg, err
		}
		cfg.File = file
		given := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
		for _, f := range configFields() {
			if v, ok := os.LookupEnv(f.env); ok {
				if err := setField(&cfg, f, v); err != nil {
					return cfg, fmt.Errorf("environment %s: %w", f.env, err)
				}
			}
			if p := set[f.key]; p != nil && given[f.flag] {
				if err := setField(&cfg, f, *p); err != nil {
					return cfg, fmt.Errorf("flag --%s: %w", f.flag, err)
				}
			}
		}
		return cfg, nil
	}
}

// loadConfigFile reads the config file into cfg and returns its path, or ""
// when the default file does not exist.
func loadConfigFile(cfg *Config, path string) (string, error) {
	explicit := path != ""
	if !explicit {
		path = os.Getenv("PITR_CONFIG")
		explicit = path != ""
	}
	if !explicit {
		path = DefaultConfigFile
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	// An empty file (or one with only comments) decodes as io.EOF: nothing set.
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("config file %s: %w", path, err)
	}
	if err := checkSecretFile(cfg, path); err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	return path, nil
}

// checkSecretFile refuses a config file that sets a secret (cfg holds only
// the file's settings yet) while group or others may read it.
func checkSecretFile(cfg *Config, path string) error {
	v := reflect.ValueOf(cfg).Elem()
	var secrets []string
	for _, f := range configFields() {
		if f.secret && !v.Field(f.index).IsZero() {
			secrets = append(secrets, f.key)
		}
	}
	if len(secrets) == 0 {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := crypt.CheckPrivateMode(path, fi); err != nil {
		return fmt.Errorf("%w (it sets %s)", err, strings.Join(secrets, ", "))
	}
	return nil
}

func setField(cfg *Config, f configField, v string) error {
	fv := reflect.ValueOf(cfg).Elem().Field(f.index)
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(v)
	case reflect.Bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		fv.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		fv.SetInt(int64(n))
	default:
		return fmt.Errorf("unsupported config field type %s", fv.Kind())
	}
	return nil
}

// configDoc renders the schema for `pitr help config`.
func configDoc() string {
	var b strings.Builder
	fields := configFields()
	sort.SliceStable(fields, func(i, j int) bool { return fields[i].index < fields[j].index })
	fmt.Fprintf(&b, "%-22s %-28s %-24s %s\n", "file key", "environment", "flag", "meaning")
	for _, f := range fields {
		flagName := "--" + f.flag
		if f.secret {
			flagName = "(none: secret)"
		}
		fmt.Fprintf(&b, "%-22s %-28s %-24s %s\n", f.key, f.env, flagName, f.doc)
	}
	return b.String()
}

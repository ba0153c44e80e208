package localcluster

import (
	"errors"
	"strings"
	"testing"
)

func TestRenderSettings(t *testing.T) {
	base := nodeSettings{name: "pg1", port: 5432, socketDir: "/tmp/c/pg1"}
	for _, tc := range []struct {
		name    string
		edit    func(*nodeSettings)
		want    []string // lines that must appear, in this order
		notWant []string
	}{
		{
			name: "primary",
			edit: func(s *nodeSettings) { s.syncStandbyNames = "ANY 1 (pg2, pg3)" },
			want: []string{
				"listen_addresses = '127.0.0.1'",
				"port = '5432'",
				"unix_socket_directories = '/tmp/c/pg1'",
				"password_encryption = 'scram-sha-256'",
				"wal_level = 'replica'",
				"hot_standby = 'on'",
				"wal_log_hints = 'on'",
				"synchronous_commit = 'on'",
				"synchronous_standby_names = 'ANY 1 (pg2, pg3)'",
				// pg_rewind's prerequisites (docs/operations.md): without WAL
				// retention a rewind after a failover can find its WAL recycled.
				"wal_keep_size = '256MB'",
			},
			notWant: []string{"primary_conninfo", "fsync"},
		},
		{
			name: "standby",
			edit: func(s *nodeSettings) { s.primaryConninfo = primaryConninfo("pg2", 6000, "") },
			want: []string{
				"synchronous_standby_names = ''",
				"primary_conninfo = 'host=127.0.0.1 port=6000 user=replicator application_name=pg2 sslmode=disable'",
			},
		},
		{
			name: "ssl",
			edit: func(s *nodeSettings) { s.ssl = true },
			want: []string{"ssl = 'on'", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'", "ssl_ca_file = 'root.crt'"},
		},
		{
			name: "standby over TLS",
			edit: func(s *nodeSettings) { s.primaryConninfo = primaryConninfo("pg2", 6000, "/d/tls/ca.pem") },
			want: []string{"primary_conninfo = 'host=127.0.0.1 port=6000 user=replicator application_name=pg2 sslmode=verify-full sslrootcert=''/d/tls/ca.pem'''"},
		},
		{
			name: "fast",
			edit: func(s *nodeSettings) { s.fast = true },
			want: []string{"fsync = 'off'"},
		},
		{
			name: "extra settings come last, sorted, quoted",
			edit: func(s *nodeSettings) {
				s.extra = map[string]string{"work_mem": "8MB", "application_name": `it's \ here`}
			},
			want: []string{"log_line_prefix", `application_name = 'it''s \\ here'`, "work_mem = '8MB'"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.edit(&s)
			got := renderSettings(s)
			at := 0
			for _, line := range tc.want {
				i := strings.Index(got[at:], line)
				if i < 0 {
					t.Fatalf("missing %q after offset %d in:\n%s", line, at, got)
				}
				at += i + len(line)
			}
			for _, s := range tc.notWant {
				if strings.Contains(got, s) {
					t.Errorf("unexpected %q in:\n%s", s, got)
				}
			}
		})
	}
}

func TestRenderHBAPutsExtraLinesFirst(t *testing.T) {
	got := renderHBA([]string{"host all alice 127.0.0.1/32 trust"}, false)
	want := []string{
		"host all alice 127.0.0.1/32 trust",
		"local all all trust",
		"host replication replicator 127.0.0.1/32 trust",
		"host all postgres 127.0.0.1/32 trust",
		"host all all 127.0.0.1/32 md5",
	}
	var lines []string
	for _, l := range strings.Split(got, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("pg_hba.conf rules:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestRenderHBAHostSSLOnly(t *testing.T) {
	got := renderHBA(nil, true)
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "host ") {
			t.Errorf("plaintext TCP rule %q with HostSSLOnly", l)
		}
	}
	if !strings.Contains(got, "hostssl all all 127.0.0.1/32 md5") || !strings.Contains(got, "local all all trust") {
		t.Errorf("pg_hba.conf:\n%s", got)
	}
}

func TestSyncStandbyNames(t *testing.T) {
	for _, tc := range []struct {
		quorum   int
		standbys []string
		want     string
	}{
		{1, []string{"pg2", "pg3"}, "ANY 1 (pg2, pg3)"},
		{2, []string{"b", "c", "d"}, "ANY 2 (b, c, d)"},
		{1, nil, ""},
	} {
		if got := syncStandbyNames(tc.quorum, tc.standbys); got != tc.want {
			t.Errorf("syncStandbyNames(%d, %v) = %q, want %q", tc.quorum, tc.standbys, got, tc.want)
		}
	}
}

func TestConnString(t *testing.T) {
	n := &Node{Port: 6543}
	for _, tc := range []struct {
		user, password, db string
		want               string
	}{
		{"pgquorum", "pgquorum-secret", "app", "host=127.0.0.1 port=6543 user='pgquorum' dbname='app' sslmode=disable password='pgquorum-secret'"},
		{"postgres", "", "", "host=127.0.0.1 port=6543 user='postgres' dbname='postgres' sslmode=disable"},
		{"o'neil", `a\b c`, "d", `host=127.0.0.1 port=6543 user='o\'neil' dbname='d' sslmode=disable password='a\\b c'`},
	} {
		if got := n.ConnString(tc.user, tc.password, tc.db); got != tc.want {
			t.Errorf("ConnString(%q, %q, %q) =\n %s\nwant\n %s", tc.user, tc.password, tc.db, got, tc.want)
		}
	}
	if got := n.Address(); got != "127.0.0.1:6543" {
		t.Errorf("Address() = %q", got)
	}
}

func TestOptionsWithDefaults(t *testing.T) {
	binDir := t.TempDir()
	for _, program := range []string{"initdb", "pg_ctl", "pg_basebackup", "postgres"} {
		writeExecutable(t, binDir, program)
	}
	ok := Options{Dir: "/x", BinDir: binDir}
	got, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Names, ",") != "pg1,pg2,pg3" || got.Quorum != 1 || got.Logger == nil {
		t.Errorf("defaults: names %v quorum %d logger %v", got.Names, got.Quorum, got.Logger)
	}
	single := Options{Dir: "/x", BinDir: binDir, Names: []string{"solo"}}
	if _, err := single.withDefaults(); err != nil {
		t.Errorf("single node: %v", err)
	}

	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no dir", func(o *Options) { o.Dir = "" }, "Dir is required"},
		{"upper-case name", func(o *Options) { o.Names = []string{"Pg1", "pg2"} }, `node name "Pg1"`},
		{"quoting name", func(o *Options) { o.Names = []string{"pg1", "a'b"} }, `node name "a'b"`},
		{"duplicate", func(o *Options) { o.Names = []string{"pg1", "pg1"} }, "given twice"},
		{"quorum above standbys", func(o *Options) { o.Quorum = 3 }, "Quorum 3: want 1..2"},
		{"negative quorum", func(o *Options) { o.Quorum = -1 }, "Quorum -1"},
		{"hba line break", func(o *Options) { o.ExtraHBA = []string{"a\nb"} }, "line break"},
		{"conf bad name", func(o *Options) { o.ExtraConf = map[string]string{"a b": "1"} }, "not a valid name"},
		{"conf reserved", func(o *Options) { o.ExtraConf = map[string]string{"port": "1"} }, "managed by localcluster"},
		{"conf newline", func(o *Options) { o.ExtraConf = map[string]string{"work_mem": "1\nfsync=off"} }, "line break"},
		{"no binaries", func(o *Options) { o.BinDir = t.TempDir() }, "server programs not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			_, err := o.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestFindBinDirHonoursTheEnvironment: PGQUORUM_PG_BINDIR names the bin dir
// of any PostgreSQL version (16 and 17 live elsewhere than 15).
func TestFindBinDirHonoursTheEnvironment(t *testing.T) {
	binDir := t.TempDir()
	for _, program := range []string{"initdb", "pg_ctl", "pg_basebackup", "postgres"} {
		writeExecutable(t, binDir, program)
	}
	t.Setenv(BinDirEnv, binDir)
	if got, err := FindBinDir(""); err != nil || got != binDir {
		t.Fatalf("FindBinDir with %s=%s: %q %v", BinDirEnv, binDir, got, err)
	}
	explicit := t.TempDir()
	if _, err := FindBinDir(explicit); err == nil || !strings.Contains(err.Error(), "lacks one of initdb") {
		t.Fatalf("an explicit bin dir without the programs: %v", err)
	}
	t.Setenv(BinDirEnv, explicit)
	if _, err := FindBinDir(""); !errors.Is(err, ErrPostgresNotFound) {
		t.Fatalf("%s naming an empty dir: %v", BinDirEnv, err)
	}
}

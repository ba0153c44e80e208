package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/localcluster"
)

// libpqScript drives one psycopg2 (libpq) session through the proxy and reports, as one JSON
// line, what a libpq application observes: the pid libpq was given against the backend's and
// its own notifications' sender (libpq's documented "is this notification mine" check), a
// cancel of a long autocommit CREATE TABLE AS, a 25006 of a read-only session and how long it
// took, and what the session sees after pg_terminate_backend of its backend (run on a direct
// connection, admin_dsn).
const libpqScript = `
import json, sys, threading, time
import psycopg2, psycopg2.errors

proxy_dsn, admin_dsn = sys.argv[1], sys.argv[2]
out = {}
admin = psycopg2.connect(admin_dsn)
admin.autocommit = True
acur = admin.cursor()
conn = psycopg2.connect(proxy_dsn)
conn.autocommit = True
cur = conn.cursor()

cur.execute("SELECT pg_backend_pid()")
out["backend_pid"] = cur.fetchone()[0]
out["libpq_pid"] = conn.get_backend_pid()
cur.execute("LISTEN libpq_mine")
cur.execute("NOTIFY libpq_mine, 'hello'")
out["notify_pid"] = conn.notifies[0].pid if conn.notifies else None

def cancel_when_running(prefix):
    for _ in range(3000):
        acur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s", (prefix + '%',))
        if acur.fetchone()[0] == 1:
            conn.cancel()
            return
        time.sleep(0.01)
canceller = threading.Thread(target=cancel_when_running, args=("CREATE TEMP TABLE ctas_libpq",))
canceller.start()
start = time.time()
try:
    cur.execute("CREATE TEMP TABLE ctas_libpq AS SELECT 1 AS a FROM pg_sleep(30)")
    out["ctas"] = "completed"
except psycopg2.errors.QueryCanceled:
    out["ctas"] = "57014"
out["ctas_seconds"] = time.time() - start
canceller.join()

cur.execute("SET default_transaction_read_only = on")
start = time.time()
try:
    cur.execute("CREATE TABLE refused_libpq (a int)")
    out["read_only"] = "created"
except psycopg2.errors.ReadOnlySqlTransaction:
    out["read_only"] = "25006"
out["read_only_ms"] = (time.time() - start) * 1000
cur.execute("RESET default_transaction_read_only")

acur.execute("SELECT pg_terminate_backend(%s)", (out["backend_pid"],))
for _ in range(3000):
    acur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (out["backend_pid"],))
    if acur.fetchone()[0] == 0:
        break
    time.sleep(0.01)
try:
    cur.execute("SELECT 1")
    out["after_terminate"] = "answered"
except psycopg2.Error as e:
    out["after_terminate"] = str(e).strip().splitlines()[0]
out["closed"] = conn.closed != 0
print(json.dumps(out))
`

// testLibpqClients: a libpq application (psycopg2) sees the proxy as it sees PostgreSQL: the
// real backend pid (so its own notifications are recognized as its own), a cancel that works
// on an autocommit statement, a read-only error at once, and a session ended by
// pg_terminate_backend ending for it too.
func (env *proxyEnv) testLibpqClients(t *testing.T) {
	python, _ := requirePsycopg2(t)
	script := filepath.Join(t.TempDir(), "libpq_client.py")
	if err := os.WriteFile(script, []byte(libpqScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adminDSN := env.primary.ConnString(localcluster.QueryUser, localcluster.QueryPassword, "postgres")
	run := func(dsn, how string) libpqObservations {
		out, err := exec.CommandContext(ctx, python, script, dsn, adminDSN).CombinedOutput()
		if err != nil {
			t.Fatalf("psycopg2 client %s: %v\n%s", how, err, out)
		}
		var got libpqObservations
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
			t.Fatalf("psycopg2 client output %q: %v", out, err)
		}
		t.Logf("libpq %s: %s", how, lines[len(lines)-1])
		return got
	}
	refused := env.scram.Stats().CancelRefused
	direct := run(env.primary.ConnString(proxySCRAMUser, proxySCRAMPassword, "postgres"), "directly")
	got := run(proxyConnString(env.scram, proxySCRAMUser, proxySCRAMPassword, ""), "through the proxy")
	if got.LibpqPID != got.BackendPID || got.NotifyPID == nil || *got.NotifyPID != got.LibpqPID {
		t.Errorf("PQbackendPID %d, pg_backend_pid() %d, own notification from %v: want all equal", got.LibpqPID, got.BackendPID, got.NotifyPID)
	}
	if got.CTAS != "57014" || direct.CTAS != got.CTAS {
		t.Errorf("cancel of an autocommit CREATE TABLE AS: %s after %.1fs (directly %s), want 57014", got.CTAS, got.CTASSeconds, direct.CTAS)
	}
	if got.ReadOnly != "25006" {
		t.Errorf("read-only session: %s, want 25006", got.ReadOnly)
	}
	if after := env.scram.Stats(); after.CancelRefused != refused {
		t.Errorf("%d cancels refused", after.CancelRefused-refused)
	}
	// After pg_terminate_backend libpq reports what it reports directly, and the connection
	// is closed.
	if got.AfterTerminate != direct.AfterTerminate || !got.Closed || !direct.Closed {
		t.Errorf("after pg_terminate_backend: %q (closed %v), directly %q (closed %v)", got.AfterTerminate, got.Closed, direct.AfterTerminate, direct.Closed)
	}
}

// libpqObservations is the JSON line libpqScript prints.
type libpqObservations struct {
	BackendPID     int     `json:"backend_pid"`
	LibpqPID       int     `json:"libpq_pid"`
	NotifyPID      *int    `json:"notify_pid"`
	CTAS           string  `json:"ctas"`
	CTASSeconds    float64 `json:"ctas_seconds"`
	ReadOnly       string  `json:"read_only"`
	ReadOnlyMs     float64 `json:"read_only_ms"`
	AfterTerminate string  `json:"after_terminate"`
	Closed         bool    `json:"closed"`
}

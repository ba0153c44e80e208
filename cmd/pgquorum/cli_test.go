package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// fakeAdmin serves canned admin API answers and records mutating calls.
func fakeAdmin(t *testing.T, token string) (*httptest.Server, *[]string) {
	return fakeAdminWith(t, token, func(*admin.ClusterView) {})
}

// fakeAdminWith is fakeAdmin with the cluster view changed by edit.
func fakeAdminWith(t *testing.T, token string, edit func(*admin.ClusterView)) (*httptest.Server, *[]string) {
	t.Helper()
	var calls []string
	now := time.Now().Add(-time.Second)
	view := admin.ClusterView{ClusterName: "demo", NodeID: 2, Epoch: 3, Primary: "pg2",
		PrimaryProbe:  &admin.PrimaryProbeView{At: now, Reachable: true},
		Redundancy:    &admin.RedundancyView{State: "degraded", Status: "degraded: 1 of 2 standbys (missing: pg1)", Required: 1},
		MembersSeenBy: 1,
		Raft:          admin.RaftView{Leader: 1, Term: 4, Commit: 40, Applied: 40},
		Members:       []admin.MemberView{{ID: 1, Addr: "127.0.0.1:7001", Voter: true, Leader: true, Reachable: true}, {ID: 2, Addr: "127.0.0.1:7002", Voter: true, Reachable: true, LastContactMS: 80}},
		Routing:       admin.RoutingInfo{Routing: true, Primary: "pg2", Epoch: 3},
		Nodes: []admin.NodeView{
			{Name: "pg1", Address: "127.0.0.1:5432", Role: "fenced", Observations: []clusterstate.Observation{{Proxy: 1, At: now}}},
			{Name: "pg2", Address: "127.0.0.1:5433", Role: "primary", Observations: []clusterstate.Observation{{Proxy: 1, Up: true, Timeline: 2, ReceiveLSN: 0x3000000 + 2048, At: now}}},
			{Name: "pg3", Address: "127.0.0.1:5434", Role: "standby", Observations: []clusterstate.Observation{{Proxy: 1, Up: true, InRecovery: true, Timeline: 2, ReceiveLSN: 0x3000000, At: now}},
				WalSender: &admin.WalSenderView{State: "streaming", SyncState: "quorum"}},
		}}
	edit(&view)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(view) })
	mux.HandleFunc("GET /members", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(view.Members) })
	mux.HandleFunc("GET /history", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]clusterstate.HistoryEntry{{Kind: clusterstate.KindAutomatic, OldPrimary: "pg1", NewPrimary: "pg2", Outcome: "completed", Epoch: 3}})
	})
	mutating := func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "this call changes the cluster and needs a valid bearer token"})
			return
		}
		calls = append(calls, r.Method+" "+r.URL.Path)
		switch r.URL.Path {
		case "/switchover":
			json.NewEncoder(w).Encode(clusterstate.HistoryEntry{Kind: clusterstate.KindSwitchover, OldPrimary: "pg2", NewPrimary: "pg3", Outcome: "completed", Epoch: 4,
				LSNTable: []clusterstate.LSNRow{{Node: "pg3", Reachable: true, Frozen: true, Timeline: 2, ReceiveLSN: 0x3000000}}})
		case "/members", "/members/4":
			json.NewEncoder(w).Encode(view.Members)
		default:
			json.NewEncoder(w).Encode(map[string]bool{"ok": true})
		}
	}
	mux.HandleFunc("POST /switchover", mutating)
	mux.HandleFunc("POST /pause", mutating)
	mux.HandleFunc("POST /members", mutating)
	mux.HandleFunc("DELETE /members/{id}", mutating)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts, &calls
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runMain(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageAndExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{nil, exitUsage, "Commands:"},
		{[]string{"help"}, exitOK, "Commands:"},
		{[]string{"nonsense"}, exitUsage, `unknown command "nonsense"`},
		{[]string{"version"}, exitOK, "pgquorum "},
		{[]string{"run"}, exitUsage, "--config FILE is required"},
		{[]string{"run", "--config", "/nonexistent.yaml"}, exitFailed, "no such file"},
		{[]string{"run", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"members"}, exitUsage, "members list"},
		{[]string{"members", "add", "x", "127.0.0.1:7004"}, exitUsage, `ID "x" is not a positive integer`},
		{[]string{"members", "frob"}, exitUsage, `unknown members command "frob"`},
		{[]string{"switchover"}, exitUsage, "--to NAME is required"},
		{[]string{"failover", "--force"}, exitUsage, "--force and --allow-data-loss go together"},
		{[]string{"list", "--admin", "127.0.0.1:1"}, exitFailed, "cannot reach the admin API"},
		{[]string{"recover"}, exitUsage, "--config FILE is required"},
		{[]string{"recover", "--force-new-cluster", "--config", "/nonexistent.yaml"}, exitFailed, "no such file"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.want) {
			t.Errorf("pgquorum %v: exit %d, output %q; want exit %d containing %q", tt.args, code, out+errOut, tt.code, tt.want)
		}
	}
}

func TestListPrintsNodesAndProxies(t *testing.T) {
	ts, _ := fakeAdmin(t, "")
	code, out, errOut := runCLI("list", "--admin", ts.URL)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"epoch 3", "primary pg2", "pg1", "fenced", "down, was primary", "pg3", "streaming", "0/3000000", "2.0 KiB", "quorum",
		"Redundancy: DEGRADED: 1 of 2 standbys (missing: pg1)", "REACHABLE (from the leader)", "80ms ago", "leader"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
}

func TestAdminFlagFromEnvironment(t *testing.T) {
	ts, _ := fakeAdmin(t, "")
	t.Setenv("PGQUORUM_ADMIN", ts.URL)
	if code, out, errOut := runCLI("members", "list"); code != exitOK || !strings.Contains(out, "127.0.0.1:7002") {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
}

func TestMutatingCommandsSendTheToken(t *testing.T) {
	ts, calls := fakeAdmin(t, "tok")
	if code, _, errOut := runCLI("pause", "--admin", ts.URL); code != exitFailed || !strings.Contains(errOut, "bearer token") {
		t.Fatalf("pause without token: exit %d %s", code, errOut)
	}
	code, out, errOut := runCLI("switchover", "--to", "pg3", "--yes", "--admin", ts.URL, "--token", "tok")
	if code != exitOK || !strings.Contains(out, "pg2 -> pg3") || !strings.Contains(out, "0/3000000") {
		t.Fatalf("switchover: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("members", "add", "4", "127.0.0.1:7004", "--learner", "--admin", ts.URL, "--token", "tok"); code != exitOK {
		t.Fatalf("members add: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI("members", "remove", "4", "--admin", ts.URL, "--token", "tok"); code != exitOK {
		t.Fatalf("members remove: %d %s", code, errOut)
	}
	want := []string{"POST /switchover", "POST /members", "DELETE /members/4"}
	if strings.Join(*calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %v, want %v", *calls, want)
	}
}

func TestDangerousCommandsAskForConfirmation(t *testing.T) {
	ts, calls := fakeAdmin(t, "")
	// go test's standard input is empty: the question gets no "yes".
	code, _, errOut := runCLI("switchover", "--to", "pg3", "--admin", ts.URL)
	if code != exitUsage || !strings.Contains(errOut, "not confirmed") || len(*calls) != 0 {
		t.Fatalf("unconfirmed switchover: exit %d %s, calls %v", code, errOut, *calls)
	}
}

func TestConfirmationsAreNeverReadFromTheEnvironment(t *testing.T) {
	ts, calls := fakeAdmin(t, "")
	t.Setenv("PGQUORUM_YES", "true")
	t.Setenv("PGQUORUM_FORCE", "true")
	t.Setenv("PGQUORUM_ALLOW_DATA_LOSS", "true")
	code, _, errOut := runCLI("switchover", "--to", "pg3", "--admin", ts.URL)
	if code != exitUsage || !strings.Contains(errOut, "not confirmed") || len(*calls) != 0 {
		t.Fatalf("PGQUORUM_YES confirmed a switchover: exit %d %s, calls %v", code, errOut, *calls)
	}
	code, _, errOut = runCLI("failover", "--admin", ts.URL, "--force")
	if code != exitUsage || !strings.Contains(errOut, "go together") {
		t.Fatalf("PGQUORUM_ALLOW_DATA_LOSS completed --force: exit %d %s", code, errOut)
	}
}

func TestTokenFileFlag(t *testing.T) {
	ts, calls := fakeAdmin(t, "from-a-file")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI("pause", "--admin", ts.URL, "--token-file", file); code != exitOK || len(*calls) != 1 {
		t.Fatalf("pause --token-file: exit %d %s", code, errOut)
	}
	t.Setenv("PGQUORUM_TOKEN_FILE", file)
	if code, _, errOut := runCLI("pause", "--admin", ts.URL); code != exitOK || len(*calls) != 2 {
		t.Fatalf("pause with PGQUORUM_TOKEN_FILE: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI("pause", "--admin", ts.URL, "--token-file", file+".missing"); code != exitFailed || !strings.Contains(errOut, "token file") {
		t.Fatalf("missing token file: exit %d %s", code, errOut)
	}
}

// TestCertAndCheckInTwoCommands makes a CA and node certificates as the
// docs say and checks a configuration that uses them.
func TestCertAndCheckInTwoCommands(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if code, out, errOut := runCLI("cert", "ca", "--dir", certs, "--cluster", "demo"); code != exitOK || !strings.Contains(out, "ca-key.pem") {
		t.Fatalf("cert ca: exit %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runCLI("cert", "node", "--dir", certs, "--id", "1,2,3", "--hosts", "127.0.0.1"); code != exitOK || strings.Count(out, "wrote") != 3 {
		t.Fatalf("cert node: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("cert", "node", "--dir", certs, "--id", "1000-1999", "--learner"); code != exitOK {
		t.Fatalf("cert node for a block of learners: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI("cert", "client", "--dir", certs, "--name", "alice"); code != exitOK {
		t.Fatalf("cert client: exit %d %s", code, errOut)
	}
	for file, mode := range map[string]os.FileMode{"ca-key.pem": 0o600, "node-1-key.pem": 0o600, "client-alice-key.pem": 0o600, "node-1.pem": 0o644} {
		st, err := os.Stat(filepath.Join(certs, file))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v; want %v", file, err, st.Mode().Perm(), mode)
		}
	}
	// Never silently replaced; a block of voter ids makes no sense.
	if code, _, errOut := runCLI("cert", "node", "--dir", certs, "--id", "2"); code != exitFailed || !strings.Contains(errOut, "--force") {
		t.Fatalf("cert node over an existing file: exit %d %s", code, errOut)
	}
	t.Setenv("PGQUORUM_FORCE", "true")
	if code, _, _ := runCLI("cert", "ca", "--dir", certs, "--cluster", "demo"); code != exitFailed {
		t.Fatal("PGQUORUM_FORCE replaced the CA")
	}
	if code, _, errOut := runCLI("cert", "node", "--dir", certs, "--id", "5-7"); code != exitUsage || !strings.Contains(errOut, "learners only") {
		t.Fatalf("a block of voter ids: exit %d %s", code, errOut)
	}
	if code, _, _ := runCLI("cert", "frob", "--dir", certs); code != exitUsage {
		t.Fatal("unknown cert command accepted")
	}

	token := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(token, []byte("0123456789abcdef0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(id int, extra string) string {
		path := filepath.Join(dir, fmt.Sprintf("proxy-%d.yaml", id))
		doc := fmt.Sprintf(`cluster_name: demo
node: {id: %d, data_dir: data}
listen: {postgres: "127.0.0.1:6432", admin: "127.0.0.1:8008", raft: "127.0.0.1:700%d"}
peers: [{id: 1, raft: "127.0.0.1:7001"}, {id: 2, raft: "127.0.0.1:7002"}, {id: 3, raft: "127.0.0.1:7003"}]
backends: [{name: pg1, address: "127.0.0.1:5432"}]
auth: {method: scram-sha-256, query_user: pgquorum}
%s`, id, id, extra)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := config(1, "peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}\nadmin: {token_file: admin-token}\n")
	if code, out, errOut := runCLI("check", "--config", good); code != exitOK || !strings.Contains(out, "OK") {
		t.Fatalf("check of a good config: exit %d %s %s", code, out, errOut)
	}
	bad := config(2, "peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}\nlog: {level: loud}\nbackend: [disable]\n")
	code, _, errOut := runCLI("check", "--config", bad)
	if code != exitFailed {
		t.Fatalf("check of a bad config: exit %d", code)
	}
	for _, want := range []string{"admin.token_file: required", "log.level", "backend: want a mapping of keys (sslmode, ca, cert, key, standby_ca), got a list (line 9)", "3 problems"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check output lacks %q:\n%s", want, errOut)
		}
	}
	code, _, errOut = runCLI("check", "--config", config(3, "peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}\nadmin: {token_file: admin-token}\n"))
	if code != exitFailed || !strings.Contains(errOut, "not node 3's") {
		t.Fatalf("check with another node's certificate: exit %d %s", code, errOut)
	}
}

func TestCheckAcceptsInsecureOnlyOnLoopback(t *testing.T) {
	dir := t.TempDir()
	write := func(raft string) string {
		path := filepath.Join(dir, "insecure.yaml")
		doc := fmt.Sprintf(`cluster_name: demo
node: {id: 1, data_dir: data}
listen: {postgres: "127.0.0.1:6432", admin: "127.0.0.1:8008", raft: %q}
peers: [{id: 1, raft: %q}]
backends: [{name: pg1, address: "127.0.0.1:5432"}]
auth: {method: scram-sha-256, query_user: pgquorum}
security: {insecure: true}
`, raft, raft)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	code, out, errOut := runCLI("check", "--config", write("127.0.0.1:7001"))
	if code != exitOK || !strings.Contains(out, "warning: security.insecure: Raft peers in plaintext") {
		t.Fatalf("insecure on loopback: exit %d %s %s", code, out, errOut)
	}
	code, _, errOut = runCLI("check", "--config", write("10.0.0.1:7001"))
	if code != exitFailed || !strings.Contains(errOut, "security.insecure: only allowed when every address is on loopback, and listen.raft") {
		t.Fatalf("insecure off loopback: exit %d %s", code, errOut)
	}
}

// TestRecoverRefusesAnEmptyDataDirectory: recover finds no log to recover (and
// creates none) rather than making an empty cluster.
func TestRecoverRefusesAnEmptyDataDirectory(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "proxy-1.yaml")
	doc := fmt.Sprintf(`cluster_name: demo
node: {id: 1, data_dir: %q}
listen: {postgres: "127.0.0.1:6432", admin: "127.0.0.1:8008", raft: "127.0.0.1:7001"}
peers: [{id: 1, raft: "127.0.0.1:7001"}]
backends: [{name: pg1, address: "127.0.0.1:5432"}]
auth: {method: scram-sha-256, query_user: pgquorum}
security: {insecure: true}
`, filepath.Join(dir, "data"))
	if err := os.WriteFile(config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"recover", "--config", config}, {"recover", "--force-new-cluster", "--config", config}} {
		code, out, errOut := runCLI(args...)
		if code != exitFailed || !strings.Contains(errOut, "no Raft log") {
			t.Errorf("pgquorum %v: exit %d, %q %q; want exit 1 saying there is no Raft log", args, code, out, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "raft.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("recover created a Raft log: %v", err)
	}
}

// TestHelpGoesToStdout: help that was asked for is on stdout with exit 0;
// usage errors on stderr with exit 2 (SPEC §3.1).
func TestHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"},
		{"list", "--help"}, {"help", "list"}, {"switchover", "-h"}, {"run", "--help"}, {"check", "--help"},
		{"members", "--help"}, {"members", "add", "--help"}, {"cert", "--help"}, {"cert", "node", "--help"},
	} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || out == "" || errOut != "" {
			t.Errorf("pgquorum %v: exit %d, stdout %q, stderr %q; want exit 0 and help on stdout only", args, code, out, errOut)
		}
		if !strings.Contains(out, "Usage: pgquorum") {
			t.Errorf("pgquorum %v: stdout lacks the usage line:\n%s", args, out)
		}
	}
	if _, out, _ := runCLI("list", "--help"); !strings.Contains(out, "-admin") || !strings.Contains(out, "show the cluster") {
		t.Errorf("list --help lacks its flags or summary:\n%s", out)
	}
	for _, args := range [][]string{nil, {"list", "--bogus"}, {"frob"}} {
		code, out, errOut := runCLI(args...)
		if code != exitUsage || out != "" || errOut == "" {
			t.Errorf("pgquorum %v: exit %d, stdout %q, stderr %q; want exit 2 and the complaint on stderr", args, code, out, errOut)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if code, out, _ := runCLI(args...); code != exitOK || !strings.HasPrefix(out, "pgquorum ") {
			t.Errorf("pgquorum %v: exit %d %q", args, code, out)
		}
	}
}

func TestJSONOutput(t *testing.T) {
	ts, _ := fakeAdmin(t, "")
	code, out, errOut := runCLI("list", "-o", "json", "--admin", ts.URL)
	var view admin.ClusterView
	if code != exitOK || json.Unmarshal([]byte(out), &view) != nil || view.Primary != "pg2" || len(view.Nodes) != 3 {
		t.Fatalf("list -o json: exit %d, %v %s %s", code, view, out, errOut)
	}
	code, out, errOut = runCLI("members", "list", "-o", "json", "--admin", ts.URL)
	var members []admin.MemberView
	if code != exitOK || json.Unmarshal([]byte(out), &members) != nil || len(members) != 2 || !members[0].Leader {
		t.Fatalf("members list -o json: exit %d %s %s", code, out, errOut)
	}
	code, out, errOut = runCLI("history", "--output", "json", "--admin", ts.URL)
	var history []clusterstate.HistoryEntry
	if code != exitOK || json.Unmarshal([]byte(out), &history) != nil || len(history) != 1 || history[0].NewPrimary != "pg2" {
		t.Fatalf("history -o json: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("list", "-o", "yaml", "--admin", ts.URL); code != exitUsage || !strings.Contains(errOut, "want table or json") {
		t.Fatalf("list -o yaml: exit %d %s", code, errOut)
	}
}

// TestListFailsWhenNotRouting: a script can tell from list's exit code that
// the proxy it asked does not forward traffic; the table is printed anyway.
func TestListFailsWhenNotRouting(t *testing.T) {
	ts, _ := fakeAdminWith(t, "", func(v *admin.ClusterView) {
		v.Routing = admin.RoutingInfo{Routing: false, Epoch: 3, Reason: "routing lease expired"}
	})
	for _, format := range []string{"table", "json"} {
		code, out, errOut := runCLI("list", "-o", format, "--admin", ts.URL)
		if code != exitFailed || !strings.Contains(out, "pg2") || !strings.Contains(errOut, "proxy 2 is not routing: routing lease expired") {
			t.Errorf("list -o %s of a proxy that does not route: exit %d, stdout %q, stderr %q", format, code, out, errOut)
		}
	}
}

func TestSwitchoverChecksTheTargetBeforeAsking(t *testing.T) {
	ts, calls := fakeAdminWith(t, "", func(v *admin.ClusterView) {
		v.Nodes = append(v.Nodes, admin.NodeView{Name: "pg4", Role: "standby",
			Observations: []clusterstate.Observation{{Proxy: 1, Up: true, InRecovery: true, At: time.Now()}},
			WalSender:    &admin.WalSenderView{State: "catchup"}})
		v.Nodes = append(v.Nodes, admin.NodeView{Name: "pg5", Role: "standby",
			Observations: []clusterstate.Observation{{Proxy: 1, Up: false, At: time.Now()}}})
	})
	for to, want := range map[string]string{
		"pg9": "no such node (the nodes are pg1, pg2, pg3, pg4, pg5)",
		"pg2": "pg2 is the primary already",
		"pg1": "pg1 is fenced",
		"pg4": "pg4 does not stream from the primary pg2 yet (walsender state catchup)",
		"pg5": "pg5 is down",
	} {
		code, _, errOut := runCLI("switchover", "--to", to, "--admin", ts.URL)
		if code != exitUsage || !strings.Contains(errOut, want) || strings.Contains(errOut, "[y/N]") {
			t.Errorf("switchover --to %s: exit %d %q; want exit 2 with %q before any question", to, code, errOut, want)
		}
	}
	code, _, errOut := runCLI("failover", "--to", "pg1", "--admin", ts.URL)
	if code != exitUsage || !strings.Contains(errOut, "pg1 is fenced") {
		t.Errorf("failover --to a fenced node: exit %d %s", code, errOut)
	}
	// A healthy, streaming standby gets as far as the question.
	code, _, errOut = runCLI("switchover", "--to", "pg3", "--admin", ts.URL)
	if code != exitUsage || !strings.Contains(errOut, "[y/N]") || !strings.Contains(errOut, "not confirmed") {
		t.Errorf("switchover --to pg3: exit %d %s", code, errOut)
	}
	if len(*calls) != 0 {
		t.Errorf("calls were made: %v", *calls)
	}
}

func TestQuorumWarnings(t *testing.T) {
	tests := []struct {
		before, after int
		fromLearner   bool
		want          []string // substrings, in order; none = no warning
	}{
		{3, 4, true, []string{"keep an odd number"}},
		{3, 4, false, []string{"keep an odd number", "not a learner that caught up"}},
		{4, 5, true, nil},
		{3, 2, false, []string{"keep an odd number", "tolerate 0 voter failure(s) instead of 1"}},
		{2, 1, false, []string{"tolerates no failure"}},
		{5, 4, false, []string{"keep an odd number", "tolerate 1 voter failure(s) instead of 2"}},
		{3, 3, false, nil},
	}
	for _, tt := range tests {
		got := quorumWarnings(tt.before, tt.after, tt.fromLearner)
		if len(got) != len(tt.want) {
			t.Errorf("quorumWarnings(%d, %d, %v) = %q, want %d warnings", tt.before, tt.after, tt.fromLearner, got, len(tt.want))
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], tt.want[i]) {
				t.Errorf("quorumWarnings(%d, %d, %v)[%d] = %q, want %q", tt.before, tt.after, tt.fromLearner, i, got[i], tt.want[i])
			}
		}
	}
}

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
	t.Helper()
	var calls []string
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	view := admin.ClusterView{ClusterName: "demo", NodeID: 2, Epoch: 3, Primary: "pg2",
		Raft:    admin.RaftView{Leader: 1, Term: 4, Commit: 40, Applied: 40},
		Members: []admin.MemberView{{ID: 1, Addr: "127.0.0.1:7001", Voter: true, Leader: true, Reachable: true}, {ID: 2, Addr: "127.0.0.1:7002", Voter: true, Reachable: true}},
		Routing: admin.RoutingInfo{Routing: true, Primary: "pg2", Epoch: 3},
		Nodes: []admin.NodeView{
			{Name: "pg1", Address: "127.0.0.1:5432", Role: "fenced", Observations: []clusterstate.Observation{{Proxy: 1, At: now}}},
			{Name: "pg2", Address: "127.0.0.1:5433", Role: "primary", Observations: []clusterstate.Observation{{Proxy: 1, Up: true, Timeline: 2, ReceiveLSN: 0x3000000 + 2048, At: now}}},
			{Name: "pg3", Address: "127.0.0.1:5434", Role: "standby", Observations: []clusterstate.Observation{{Proxy: 1, Up: true, InRecovery: true, Timeline: 2, ReceiveLSN: 0x3000000, At: now}}},
		}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(view) })
	mux.HandleFunc("GET /members", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(view.Members) })
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
	for _, want := range []string{"epoch 3", "primary pg2", "pg1", "fenced", "pg3", "streaming", "0/3000000", "2.0 KiB", "leader"} {
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
listen: {postgres: "127.0.0.1:6432", admin: "127.0.0.1:8008", raft: "127.0.0.1:7001"}
peers: [{id: 1, raft: "127.0.0.1:7001"}, {id: 2, raft: "127.0.0.1:7002"}, {id: 3, raft: "127.0.0.1:7003"}]
backends: [{name: pg1, address: "127.0.0.1:5432"}]
auth: {method: scram-sha-256, query_user: pgquorum}
%s`, id, extra)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := config(1, "peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}\nadmin: {token_file: admin-token}\n")
	if code, out, errOut := runCLI("check", "--config", good); code != exitOK || !strings.Contains(out, "OK") {
		t.Fatalf("check of a good config: exit %d %s %s", code, out, errOut)
	}
	bad := config(2, "peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}\nlog: {level: loud}\n")
	code, _, errOut := runCLI("check", "--config", bad)
	if code != exitFailed {
		t.Fatalf("check of a bad config: exit %d", code)
	}
	for _, want := range []string{"admin.token_file: required", "log.level", "2 problems"} {
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

package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestAgentAndRejoinUsage(t *testing.T) {
	t.Setenv("PGDATA", "")
	dir := t.TempDir()
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"help"}, exitOK, "agent"},
		{[]string{"agent"}, exitUsage, "--pgdata DIR is required"},
		{[]string{"rejoin"}, exitUsage, "--pgdata DIR is required"},
		{[]string{"agent", "--pgdata", dir, "--ca", filepath.Join(dir, "missing.pem")}, exitUsage, "--ca"},
		{[]string{"agent", "--pgdata", dir, "--token-file", filepath.Join(dir, "missing")}, exitUsage, "--token-file"},
		{[]string{"agent", "--pgdata", dir, "--interval", "soon"}, exitUsage, "invalid value"},
		{[]string{"rejoin", "--pgdata", filepath.Join(dir, "missing"), "--admin", "127.0.0.1:1"}, exitFailed, "data directory"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.want) {
			t.Errorf("pgquorum %v: exit %d, output %q; want exit %d containing %q", tt.args, code, out+errOut, tt.code, tt.want)
		}
	}
}

// The systemd unit's command line and its environment file are a valid agent
// configuration: every PGQUORUM_ variable names a flag of `pgquorum agent`, and
// KillMode=process keeps PostgreSQL (and a running pg_rewind) alive when the
// agent stops.
func TestSystemdUnit(t *testing.T) {
	unit := readFile(t, "../../configs/systemd/pgquorum-agent.service")
	env := readFile(t, "../../configs/systemd/agent.env")
	fs, options := agentFlags(io.Discard)
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known["PGQUORUM_"+envName(f.Name)] = true })
	for _, line := range strings.Split(env, "\n") {
		line = strings.TrimSpace(line)
		commented := strings.HasPrefix(line, "#")
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		if !ok || !strings.HasPrefix(name, "PGQUORUM_") {
			continue
		}
		if !known[name] {
			t.Errorf("agent.env: %s is not a flag of pgquorum agent", name)
		}
		if !commented {
			t.Setenv(name, value)
		}
	}
	var execStart []string
	for _, line := range strings.Split(unit, "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			execStart = strings.Fields(rest)
		}
	}
	if len(execStart) < 2 || filepath.Base(execStart[0]) != "pgquorum" || execStart[1] != "agent" {
		t.Fatalf("ExecStart %q: want /path/pgquorum agent ...", execStart)
	}
	t.Setenv("PGQUORUM_TOKEN_FILE", "") // the example names a file that does not exist here
	if err := parseFlags(fs, execStart[2:]); err != nil {
		t.Fatalf("ExecStart flags with agent.env: %v", err)
	}
	opts, err := options()
	if err != nil {
		t.Fatalf("options of the unit: %v", err)
	}
	if opts.PGData != "/var/lib/postgresql/15/main" || len(opts.Admin) != 3 || opts.NodeName != "pg1" {
		t.Errorf("options from agent.env: pgdata %q, admin %q, node %q", opts.PGData, opts.Admin, opts.NodeName)
	}
	for _, want := range []string{"KillMode=process", "User=postgres", "Restart=always", "EnvironmentFile=/etc/pgquorum/agent.env"} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("the unit lacks %q", want)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// The agent's arguments in configs/kubernetes/postgres.yaml are flags of
// `pgquorum agent` (the manifest tests there check what they point at).
func TestKubernetesAgentArgs(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, "../../configs/kubernetes/postgres.yaml")))
	var args []string
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Name string   `yaml:"name"`
							Args []string `yaml:"args"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			if doc.Kind == "StatefulSet" && c.Name == "postgres" {
				args = c.Args
			}
		}
	}
	if len(args) < 2 || args[0] != "agent" {
		t.Fatalf("postgres.yaml: container args %q, want agent ...", args)
	}
	fs, _ := agentFlags(io.Discard)
	if err := parseFlags(fs, args[1:]); err != nil {
		t.Fatalf("postgres.yaml: %v", err)
	}
}

package localcluster

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

func writeExecutable(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestParseProcStat(t *testing.T) {
	tail := " 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 4242 100 200"
	for _, tc := range []struct {
		name string
		line string
		want procStat
		err  bool
	}{
		{
			name: "postmaster",
			line: "1234 (postgres) S 1 1234 1234" + tail,
			want: procStat{pid: 1234, comm: "postgres", state: 'S', ppid: 1, startTime: 4242},
		},
		{
			name: "comm with spaces and parentheses",
			line: "77 (a (b) c) T 12 77 77" + tail,
			want: procStat{pid: 77, comm: "a (b) c", state: 'T', ppid: 12, startTime: 4242},
		},
		{name: "zombie", line: "5 (x) Z 1 5 5" + tail, want: procStat{pid: 5, comm: "x", state: 'Z', ppid: 1, startTime: 4242}},
		{name: "empty", line: "", err: true},
		{name: "no parentheses", line: "1 postgres S 1", err: true},
		{name: "truncated", line: "1 (postgres) S 1 1 1", err: true},
		{name: "bad ppid", line: "1 (p) S x 1 1" + tail, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(tc.line)
			if tc.err {
				if err == nil {
					t.Errorf("parsed %q as %+v, want an error", tc.line, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseProcStat = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestProcessSignalsAndDiscovery drives a real child process (sleep) through what Freeze, Thaw
// and Kill do to a postmaster.
func TestProcessSignalsAndDiscovery(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "data")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.Dir = sub
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot run sleep (coreutils): %v", err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	s, err := readProcStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	child := process{pid: s.pid, startTime: s.startTime}

	inDir, err := processesIn(dir)
	if err != nil || !slices.Contains(inDir, child) {
		t.Errorf("processesIn(%s) = %v, %v; want it to contain %v", dir, inDir, err, child)
	}
	self, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	children, err := childrenOf(process{pid: self.pid, startTime: self.startTime})
	if err != nil || !slices.Contains(children, child) {
		t.Errorf("childrenOf(self) = %v, %v; want it to contain %v", children, err, child)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := child.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := waitStopped(ctx, []process{child}); err != nil {
		t.Fatal(err)
	}
	if err := child.signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// A process with another start time is someone else: never signalled.
	impostor := process{pid: child.pid, startTime: child.startTime + 1}
	if err := impostor.signal(syscall.SIGKILL); !errors.Is(err, errProcessGone) {
		t.Fatalf("signal to a reused pid = %v, want errProcessGone", err)
	}
	if child.gone() {
		t.Fatal("child gone after SIGCONT")
	}
	if err := child.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie counts as gone.
	if err := waitGone(ctx, []process{child}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := child.signal(syscall.SIGKILL); !errors.Is(err, errProcessGone) {
		t.Errorf("signal after exit = %v, want errProcessGone", err)
	}
	if inDir, err := processesIn(dir); err != nil || slices.Contains(inDir, child) {
		t.Errorf("processesIn after kill = %v, %v", inDir, err)
	}
}

package rejoin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestPostmasterLock(t *testing.T) {
	dir := t.TempDir()
	writePid := func(pid int) {
		t.Helper()
		content := strconv.Itoa(pid) + "\n" + dir + "\n1700000000\n5432\n/tmp\n127.0.0.1\n  5432001     0\nready\n"
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, want lockState) {
		t.Helper()
		_, got, err := postmasterLock(dir)
		if err != nil || got != want {
			t.Fatalf("%s: got state %d, %v; want %d", what, got, err, want)
		}
	}
	check("no lock file", lockAbsent)

	// A live process working in the directory stands in for a postmaster.
	cmd := exec.Command("sleep", "60")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	writePid(cmd.Process.Pid)
	check("live postmaster", lockRunning)
	if pids := liveProcessesIn(dir); len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Fatalf("liveProcessesIn = %v, want [%d]", pids, cmd.Process.Pid)
	}

	// Our own pid works elsewhere: a reused pid.
	writePid(os.Getpid())
	check("pid of another process", lockStale)

	// Killed, not reaped yet: a zombie.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	writePid(cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if state, err := processState(cmd.Process.Pid); err == nil && state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed process never became a zombie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	check("zombie postmaster", lockStale)
	if pids := liveProcessesIn(dir); len(pids) != 0 {
		t.Fatalf("liveProcessesIn counts a zombie: %v", pids)
	}
	_ = cmd.Wait()
	check("postmaster gone", lockStale)
}

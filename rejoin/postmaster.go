package rejoin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// This file tells whether a server runs in the data directory, from
// postmaster.pid and /proc. A killed postmaster can linger as a zombie until its
// parent (often pid 1 of a container) reaps it; pg_ctl, and PostgreSQL itself,
// then take the lock file for a live server and refuse to start or recover. So a
// lock file whose postmaster is a zombie or gone is removed, after every process
// that worked in the data directory (orphaned backends) has exited.

// lockState is what postmaster.pid says about the data directory.
type lockState int

const (
	lockAbsent  lockState = iota // no postmaster.pid
	lockRunning                  // its postmaster is alive and works in the data directory
	lockStale                    // its postmaster is gone, a zombie, or a reused pid
	lockUnknown                  // /proc cannot tell (not Linux, no permission)
)

// postmasterLock reads postmaster.pid and looks the postmaster up in /proc.
func postmasterLock(dataDir string) (pid int, state lockState, err error) {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, lockAbsent, nil
	}
	if err != nil {
		return 0, lockUnknown, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err = strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		// A lock file being written, or garbage: let pg_ctl judge.
		return 0, lockUnknown, nil
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return pid, lockUnknown, nil
	}
	procState, err := processState(pid)
	if errors.Is(err, os.ErrNotExist) || procState == 'Z' || procState == 'X' {
		return pid, lockStale, nil
	}
	if err != nil {
		return pid, lockUnknown, nil
	}
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
	if err != nil {
		return pid, lockUnknown, nil
	}
	if !sameDir(strings.TrimSuffix(cwd, " (deleted)"), dataDir) {
		return pid, lockStale, nil // the pid was reused by another process
	}
	return pid, lockRunning, nil
}

// processState returns the state letter of /proc/<pid>/stat (R, S, D, T, Z, ...).
func processState(pid int) (byte, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return s[i+2], nil
}

// liveProcessesIn returns the pids of live processes whose working directory is
// dir or below it: every PostgreSQL process changes into its data directory.
// Processes we may not inspect are skipped.
func liveProcessesIn(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd != dir && !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue
		}
		if state, err := processState(pid); err == nil && state != 'Z' && state != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// serverRunning reports whether a server runs in the data directory. A stale
// lock file is removed (with the unix socket lock files naming the same pid)
// once no process works in the data directory any more, waiting at most timeout.
func (p *programs) serverRunning(ctx context.Context, socketDirs []string, port int, timeout time.Duration) (bool, error) {
	pid, state, err := postmasterLock(p.dataDir)
	if err != nil {
		return false, err
	}
	switch state {
	case lockAbsent:
		return false, nil
	case lockRunning:
		return true, nil
	case lockUnknown:
		return p.pgCtlStatus(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		left := liveProcessesIn(p.dataDir)
		if len(left) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("the postmaster (pid %d) is gone but processes %v still work in %s", pid, left, p.dataDir)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, dir := range socketDirs {
		lock := filepath.Join(dir, fmt.Sprintf(".s.PGSQL.%d.lock", port))
		if data, err := os.ReadFile(lock); err == nil {
			first, _, _ := strings.Cut(string(data), "\n")
			if strings.TrimSpace(first) == strconv.Itoa(pid) {
				if err := os.Remove(lock); err != nil && !errors.Is(err, os.ErrNotExist) {
					return false, fmt.Errorf("remove the stale socket lock file: %w", err)
				}
			}
		}
	}
	if err := os.Remove(filepath.Join(p.dataDir, "postmaster.pid")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("remove the stale postmaster.pid: %w", err)
	}
	p.logger.Info("removed the stale postmaster.pid of a server that is gone (killed, or a zombie not reaped yet)", "pid", pid)
	return false, nil
}

// socketDirs are the server's unix socket directories (PostgreSQL's defaults
// when unset: /tmp upstream, /var/run/postgresql on Debian).
func socketDirs(settings map[string]string) []string {
	value, ok := settings["unix_socket_directories"]
	if !ok {
		return []string{"/tmp", "/var/run/postgresql"}
	}
	var dirs []string
	for _, d := range strings.Split(value, ",") {
		if d = strings.TrimSpace(d); d != "" && !strings.HasPrefix(d, "@") {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file reads /proc to find PostgreSQL processes and signals them. A process is named by its
// pid and its start time, so a pid the kernel has reused for someone else's process is never
// signalled.

// errProcessGone means the process exited (or is a zombie waiting to be reaped).
var errProcessGone = errors.New("process gone")

// procStat is the part of /proc/<pid>/stat we use.
type procStat struct {
	pid       int
	comm      string
	state     byte // R, S, D, T (stopped), Z (zombie), ...
	ppid      int
	startTime uint64 // clock ticks after boot
}

// parseProcStat parses one /proc/<pid>/stat line. comm may contain spaces and parentheses, so
// the fields after it are found from the last ')'.
func parseProcStat(line string) (procStat, error) {
	open := strings.IndexByte(line, '(')
	closing := strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("malformed stat line %q", line)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line[:open]))
	if err != nil {
		return procStat{}, fmt.Errorf("malformed pid in stat line %q: %w", line, err)
	}
	// Fields after comm: state(3) ppid(4) ... starttime(22), counted from 1 over the whole line.
	rest := strings.Fields(line[closing+1:])
	if len(rest) < 20 || len(rest[0]) != 1 {
		return procStat{}, fmt.Errorf("short stat line %q", line)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed ppid in stat line %q: %w", line, err)
	}
	start, err := strconv.ParseUint(rest[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed starttime in stat line %q: %w", line, err)
	}
	return procStat{pid: pid, comm: line[open+1 : closing], state: rest[0][0], ppid: ppid, startTime: start}, nil
}

// readProcStat returns errProcessGone when the process does not exist.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return procStat{}, errProcessGone
	}
	if err != nil {
		return procStat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	return parseProcStat(strings.TrimSpace(string(data)))
}

func (s procStat) alive() bool { return s.state != 'Z' && s.state != 'X' }

// process is one OS process, identified by pid and start time.
type process struct {
	pid       int
	startTime uint64
}

// stat returns the current stat of p, or errProcessGone if p exited (zombies count as exited).
func (p process) stat() (procStat, error) {
	s, err := readProcStat(p.pid)
	if err != nil {
		return procStat{}, err
	}
	if s.startTime != p.startTime || !s.alive() {
		return procStat{}, errProcessGone
	}
	return s, nil
}

// signal sends sig to p if p still exists.
func (p process) signal(sig syscall.Signal) error {
	if _, err := p.stat(); err != nil {
		return err
	}
	if err := syscall.Kill(p.pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return errProcessGone
		}
		return fmt.Errorf("send %v to pid %d: %w", sig, p.pid, err)
	}
	return nil
}

func (p process) gone() bool {
	_, err := p.stat()
	return errors.Is(err, errProcessGone)
}

// allPIDs lists the pids in /proc.
func allPIDs() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// childrenOf lists the live processes whose parent is parent.
func childrenOf(parent process) ([]process, error) {
	pids, err := allPIDs()
	if err != nil {
		return nil, err
	}
	var children []process
	for _, pid := range pids {
		s, err := readProcStat(pid)
		if err != nil || s.ppid != parent.pid || !s.alive() || s.startTime < parent.startTime {
			continue // gone meanwhile, not a child, or an older process that got the parent's pid reused
		}
		children = append(children, process{pid: pid, startTime: s.startTime})
	}
	return children, nil
}

// ProcessesIn returns the pids of live processes whose working directory is dir or below it.
// Every PostgreSQL process changes into its data directory, so after Cluster.Close this must be
// empty for the cluster's Dir; tests use it to prove nothing was left behind. Processes we may not
// inspect are skipped.
func ProcessesIn(dir string) ([]int, error) {
	procs, err := processesIn(dir)
	if err != nil {
		return nil, err
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.pid
	}
	return pids, nil
}

func processesIn(dir string) ([]process, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("absolute path of %s: %w", dir, err)
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	pids, err := allPIDs()
	if err != nil {
		return nil, err
	}
	var procs []process
	for _, pid := range pids {
		cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
		if err != nil {
			continue // exited, a zombie, or not ours to inspect
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd != dir && !strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			continue
		}
		s, err := readProcStat(pid)
		if err != nil || !s.alive() {
			continue
		}
		procs = append(procs, process{pid: pid, startTime: s.startTime})
	}
	return procs, nil
}

// waitUntil polls check every interval until it reports done, check fails, or ctx ends.
func waitUntil(ctx context.Context, interval time.Duration, check func() (bool, error)) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// waitGone waits until every process in procs has exited.
func waitGone(ctx context.Context, procs []process) error {
	err := waitUntil(ctx, 10*time.Millisecond, func() (bool, error) {
		for _, p := range procs {
			if !p.gone() {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for processes %v to exit: %w", pidsOf(procs), err)
	}
	return nil
}

// waitStopped waits until every process in procs that still exists is stopped by a signal.
func waitStopped(ctx context.Context, procs []process) error {
	err := waitUntil(ctx, 5*time.Millisecond, func() (bool, error) {
		for _, p := range procs {
			s, err := p.stat()
			if errors.Is(err, errProcessGone) {
				continue
			}
			if err != nil {
				return false, err
			}
			if s.state != 'T' {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for processes %v to stop: %w", pidsOf(procs), err)
	}
	return nil
}

func pidsOf(procs []process) []int {
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.pid
	}
	return pids
}

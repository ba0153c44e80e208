package localcluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// This file handles the postmaster.pid a killed server leaves behind, and the small System V
// shared memory segment named in it, which only a clean shutdown removes.

// lockFile is the part of postmaster.pid we use.
type lockFile struct {
	pid   int
	shmID int // System V shared memory id; -1 when the file does not name one
}

// parseLockFile parses postmaster.pid: line 1 is the postmaster pid, line 7 "key id" of its
// System V shared memory segment (absent while the server is still starting).
func parseLockFile(content string) (lockFile, error) {
	lines := strings.Split(content, "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return lockFile{}, fmt.Errorf("postmaster.pid: bad pid line %q", lines[0])
	}
	lock := lockFile{pid: pid, shmID: -1}
	if len(lines) >= 7 {
		if fields := strings.Fields(lines[6]); len(fields) == 2 {
			if id, err := strconv.Atoi(fields[1]); err == nil && id >= 0 {
				lock.shmID = id
			}
		}
	}
	return lock, nil
}

// readLockFile returns an error wrapping os.ErrNotExist when there is no lock file.
func readLockFile(path string) (lockFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return lockFile{}, err
	}
	return parseLockFile(string(data))
}

// removeStaleLockFile removes postmaster.pid, the shared memory segment it names, and the unix
// socket's lock file. Call it only when no process runs in the data directory: the lock files are
// then stale. PostgreSQL would mostly cope by itself, but it takes a lock file whose pid still
// exists for a live server, and a killed postmaster can linger as a zombie until its new parent
// (often pid 1 in a container) reaps it.
func (n *Node) removeStaleLockFile() error {
	socketLock := filepath.Join(n.SocketDir, fmt.Sprintf(".s.PGSQL.%d.lock", n.Port))
	if err := os.Remove(socketLock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket lock file: %w", err)
	}
	path := filepath.Join(n.DataDir, "postmaster.pid")
	lock, err := readLockFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil && lock.shmID >= 0 {
		if err := removeOrphanSegment(lock.shmID, lock.pid); err != nil {
			n.logger.Warn("localcluster: cannot remove shared memory of a killed server", "node", n.Name, "err", err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale lock file: %w", err)
	}
	n.logger.Info("localcluster: removed stale postmaster.pid", "node", n.Name)
	return nil
}

// removeOrphanSegment removes System V shared memory segment id if the process creatorPID
// created it and nothing is attached to it any more; otherwise it leaves it alone.
func removeOrphanSegment(id, creatorPID int) error {
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		return fmt.Errorf("list shared memory segments: %w", err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		seg, ok := parseSegment(scanner.Text())
		if !ok || seg.id != id {
			continue
		}
		if seg.creatorPID != creatorPID || seg.attached != 0 {
			return nil
		}
		const ipcRMID = 0 // IPC_RMID from <sys/ipc.h>
		if _, _, errno := syscall.Syscall(syscall.SYS_SHMCTL, uintptr(id), ipcRMID, 0); errno != 0 {
			return fmt.Errorf("remove shared memory segment %d: %w", id, errno)
		}
		return nil
	}
	return scanner.Err()
}

type segment struct {
	id, creatorPID, attached int
}

// parseSegment parses one line of /proc/sysvipc/shm:
// "key shmid perms size cpid lpid nattch uid gid ...". The header line does not parse.
func parseSegment(line string) (segment, bool) {
	fields := strings.Fields(line)
	if len(fields) < 7 {
		return segment{}, false
	}
	id, err1 := strconv.Atoi(fields[1])
	cpid, err2 := strconv.Atoi(fields[4])
	nattch, err3 := strconv.Atoi(fields[6])
	if err1 != nil || err2 != nil || err3 != nil {
		return segment{}, false
	}
	return segment{id: id, creatorPID: cpid, attached: nattch}, true
}

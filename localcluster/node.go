package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Default bounds of the blocking lifecycle methods when their context has no deadline.
const (
	defaultStartTimeout = 60 * time.Second
	defaultStopTimeout  = 60 * time.Second
	killTimeout         = 10 * time.Second
	freezeTimeout       = 5 * time.Second
)

// errPortInUse marks a start that failed because another process took the node's port.
var errPortInUse = errors.New("port already in use")

// Node is one PostgreSQL server of a Cluster.
//
// The exported fields are fixed once Start (the package function) returns; read them freely.
// The lifecycle methods (Start, Stop, Kill, Freeze, Thaw, and Cluster.Close) serialize on the
// node's mutex, which guards frozen and closed. The SQL helpers (sql.go) take no lock, so they
// can run while another goroutine freezes or kills the node — that is how a test watches a
// commit wait for a frozen standby.
type Node struct {
	Name      string
	Port      int    // loopback TCP port, chosen free at Start
	DataDir   string // Dir/<name>/data
	SocketDir string // unix socket directory: Dir/<name>, or a short temporary one if that path is too long
	LogFile   string // server log, Dir/<name>.log; appended to across restarts

	run    *runner
	logger *slog.Logger
	tls    bool // Options.TLS: ConnString uses sslmode=require

	mu     sync.Mutex
	frozen []process // processes stopped by Freeze, postmaster first; nil when not frozen
	closed bool      // set by Cluster.Close; Start then refuses
}

// Address returns "127.0.0.1:<port>".
func (n *Node) Address() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port))
}

// ConnString returns a libpq keyword/value connection string to the node over loopback TCP
// (sslmode=require with Options.TLS, else disable).
// An empty password is left out; an empty db means "postgres".
func (n *Node) ConnString(user, password, db string) string {
	if db == "" {
		db = "postgres"
	}
	parts := []string{
		"host=127.0.0.1",
		"port=" + strconv.Itoa(n.Port),
		"user=" + quoteConnValue(user),
		"dbname=" + quoteConnValue(db),
		"sslmode=disable",
	}
	if n.tls {
		parts[len(parts)-1] = "sslmode=require"
	}
	if password != "" {
		parts = append(parts, "password="+quoteConnValue(password))
	}
	return strings.Join(parts, " ")
}

// Start starts the stopped or killed node with pg_ctl and waits until it accepts connections.
// After Kill it first waits for the old server's processes to exit and removes its stale lock
// file; PostgreSQL then runs crash recovery. On failure the error ends with the server log tail.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("start %s: cluster closed", n.Name)
	}
	ctx, cancel := withDefaultTimeout(ctx, defaultStartTimeout)
	defer cancel()
	return n.start(ctx)
}

func (n *Node) start(ctx context.Context) error {
	if pm, running, err := n.postmaster(); err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	} else if running {
		return fmt.Errorf("start %s: already running (postmaster pid %d)", n.Name, pm.pid)
	}
	// Backends of a killed postmaster exit once they notice; until then they hold its shared
	// memory and a new postmaster refuses to start.
	err := waitUntil(ctx, 10*time.Millisecond, func() (bool, error) {
		procs, err := processesIn(n.DataDir)
		return len(procs) == 0, err
	})
	if err != nil {
		return fmt.Errorf("start %s: processes of the previous server still running: %w", n.Name, err)
	}
	if err := n.removeStaleLockFile(); err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	logOffset := fileSize(n.LogFile)
	err = n.run.run(ctx, "pg_ctl", "start", "--silent", "--wait", "--timeout", timeoutSeconds(ctx),
		"--pgdata", n.DataDir, "--log", n.LogFile)
	if err != nil {
		tail := logTail(n.LogFile, logOffset, 20)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("start %s on port %d: %w\n--- tail of %s ---\n%s", n.Name, n.Port, err, n.LogFile, tail)
	}
	if err := n.waitAcceptingConnections(ctx); err != nil {
		return fmt.Errorf("start %s: %w\n--- tail of %s ---\n%s", n.Name, err, n.LogFile, logTail(n.LogFile, logOffset, 20))
	}
	n.logger.Info("localcluster: node started", "node", n.Name, "port", n.Port)
	return nil
}

// Stop stops the node with pg_ctl stop -m fast (thawing it first if frozen) and waits for the
// server to exit. Stopping a node that is not running is an error.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := withDefaultTimeout(ctx, defaultStopTimeout)
	defer cancel()
	if err := n.thaw(); err != nil {
		return fmt.Errorf("stop %s: %w", n.Name, err)
	}
	if _, running, err := n.postmaster(); err != nil {
		return fmt.Errorf("stop %s: %w", n.Name, err)
	} else if !running {
		return fmt.Errorf("stop %s: not running", n.Name)
	}
	err := n.run.run(ctx, "pg_ctl", "stop", "--silent", "--wait", "--timeout", timeoutSeconds(ctx),
		"--pgdata", n.DataDir, "--mode", "fast")
	if err != nil {
		return fmt.Errorf("stop %s: %w", n.Name, err)
	}
	n.logger.Info("localcluster: node stopped", "node", n.Name)
	return nil
}

// Kill sends SIGKILL to the postmaster, like a crash, and waits (bounded) until it is gone. Its
// children notice and exit on their own shortly after (a frozen node's children are continued
// so that they can). Start works afterwards and runs crash recovery.
func (n *Node) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pm, running, err := n.postmaster()
	if err != nil {
		return fmt.Errorf("kill %s: %w", n.Name, err)
	}
	if !running {
		return fmt.Errorf("kill %s: not running", n.Name)
	}
	if err := pm.signal(syscall.SIGKILL); err != nil && !errors.Is(err, errProcessGone) {
		return fmt.Errorf("kill %s: %w", n.Name, err)
	}
	if err := n.thaw(); err != nil {
		return fmt.Errorf("kill %s: %w", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	if err := waitGone(ctx, []process{pm}); err != nil {
		return fmt.Errorf("kill %s: %w", n.Name, err)
	}
	n.logger.Info("localcluster: node killed", "node", n.Name, "pid", pm.pid)
	return nil
}

// Freeze sends SIGSTOP to the postmaster and every child process and waits until all are
// stopped: the node neither answers nor acknowledges replication, but its connections stay open.
// Freezing a frozen node does nothing. Thaw, Stop, Kill and Cluster.Close undo it.
func (n *Node) Freeze() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.frozen != nil {
		return nil
	}
	pm, running, err := n.postmaster()
	if err != nil {
		return fmt.Errorf("freeze %s: %w", n.Name, err)
	}
	if !running {
		return fmt.Errorf("freeze %s: not running", n.Name)
	}
	if err := pm.signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("freeze %s: %w", n.Name, err)
	}
	n.frozen = []process{pm}
	// A stopped postmaster forks nothing new; the second pass catches a child forked just
	// before the SIGSTOP landed.
	for range 2 {
		children, err := childrenOf(pm)
		if err != nil {
			return errors.Join(fmt.Errorf("freeze %s: %w", n.Name, err), n.thaw())
		}
		for _, child := range children {
			if slices.Contains(n.frozen, child) {
				continue
			}
			err := child.signal(syscall.SIGSTOP)
			if errors.Is(err, errProcessGone) {
				continue
			}
			if err != nil {
				return errors.Join(fmt.Errorf("freeze %s: %w", n.Name, err), n.thaw())
			}
			n.frozen = append(n.frozen, child)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), freezeTimeout)
	defer cancel()
	if err := waitStopped(ctx, n.frozen); err != nil {
		return errors.Join(fmt.Errorf("freeze %s: %w", n.Name, err), n.thaw())
	}
	n.logger.Info("localcluster: node frozen", "node", n.Name, "processes", len(n.frozen))
	return nil
}

// Thaw sends SIGCONT to every process Freeze stopped. Thawing a node that is not frozen does
// nothing.
func (n *Node) Thaw() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.frozen == nil {
		return nil
	}
	if err := n.thaw(); err != nil {
		return fmt.Errorf("thaw %s: %w", n.Name, err)
	}
	n.logger.Info("localcluster: node thawed", "node", n.Name)
	return nil
}

// thaw continues the frozen processes; the caller holds mu.
func (n *Node) thaw() error {
	var errs []error
	for _, p := range n.frozen {
		if err := p.signal(syscall.SIGCONT); err != nil && !errors.Is(err, errProcessGone) {
			errs = append(errs, err)
		}
	}
	n.frozen = nil
	return errors.Join(errs...)
}

// shutdown stops the node for good, whatever its state: thaw, pg_ctl stop -m immediate, SIGKILL
// if that fails, then SIGKILL whatever process is still in the data directory (children of a
// killed postmaster), and wait for all of them. Later Starts are refused.
func (n *Node) shutdown(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	var errs []error
	if err := n.thaw(); err != nil {
		errs = append(errs, err)
	}
	pm, running, err := n.postmaster()
	if err != nil {
		errs = append(errs, err)
	}
	if running {
		stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := n.run.run(stopCtx, "pg_ctl", "stop", "--silent", "--wait", "--timeout", timeoutSeconds(stopCtx),
			"--pgdata", n.DataDir, "--mode", "immediate")
		cancel()
		if err != nil {
			n.logger.Warn("localcluster: pg_ctl stop failed, killing the postmaster", "node", n.Name, "err", err)
			if err := pm.signal(syscall.SIGKILL); err != nil && !errors.Is(err, errProcessGone) {
				errs = append(errs, err)
			}
		}
	}
	leftovers, err := processesIn(n.DataDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range leftovers {
		_ = p.signal(syscall.SIGCONT) // a process stopped behind our back could not die otherwise
		if err := p.signal(syscall.SIGKILL); err != nil && !errors.Is(err, errProcessGone) {
			errs = append(errs, err)
		}
	}
	if err := waitGone(ctx, leftovers); err != nil {
		errs = append(errs, err)
	} else if err := n.removeStaleLockFile(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close %s: %w", n.Name, err)
	}
	return nil
}

// postmaster returns the node's running postmaster, found through postmaster.pid. The pid is
// trusted only if that process is alive and works in our data directory (it chdirs there), so a
// stale file whose pid was reused is recognised as stale.
func (n *Node) postmaster() (pm process, running bool, err error) {
	lock, err := readLockFile(filepath.Join(n.DataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return process{}, false, nil
	}
	if err != nil {
		return process{}, false, err
	}
	s, err := readProcStat(lock.pid)
	if errors.Is(err, errProcessGone) || (err == nil && !s.alive()) {
		return process{}, false, nil
	}
	if err != nil {
		return process{}, false, err
	}
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(lock.pid), "cwd"))
	if err != nil || cwd != n.DataDir {
		return process{}, false, nil
	}
	return process{pid: lock.pid, startTime: s.startTime}, true, nil
}

// withDefaultTimeout bounds ctx by d unless it already has a deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// timeoutSeconds is the time left before ctx's deadline in whole seconds, for pg_ctl --timeout.
func timeoutSeconds(ctx context.Context) string {
	deadline, ok := ctx.Deadline()
	if !ok {
		return "60"
	}
	return strconv.Itoa(max(1, int(math.Ceil(time.Until(deadline).Seconds()))))
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// logTail returns at most maxLines last lines written to path after offset.
func logTail(path string, offset int64, maxLines int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	// A failed start writes a few lines; 64 KiB is plenty and bounds the read.
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

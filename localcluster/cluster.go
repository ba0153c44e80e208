package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

const (
	// defaultClusterStartTimeout bounds Start when its context has no deadline.
	defaultClusterStartTimeout = 2 * time.Minute
	// closeTimeout bounds Close; stopping a node immediately takes well under a second.
	closeTimeout = 60 * time.Second
	// portAttempts is how often a node's first start is tried with a fresh port when another
	// process grabbed the chosen one in the meantime.
	portAttempts = 5
	// maxSocketPath is the longest unix socket path the kernel accepts (sun_path minus NUL).
	maxSocketPath = 107
)

// Cluster is a running local PostgreSQL quorum cluster: one primary streaming to standbys with
// synchronous_standby_names = 'ANY k (...)'.
//
// Nodes is fixed after Start returns. Each Node owns its own lifecycle state; Close may be called
// from any goroutine, any number of times.
type Cluster struct {
	Nodes []*Node // in Options.Names order; Nodes[0] is the initial primary
	// TLS names the certificate files when Options.TLS is set; nil otherwise.
	TLS *TLSFiles

	dir    string // canonical Options.Dir
	opts   Options
	run    *runner
	logger *slog.Logger
	// socketRoot is a short temporary directory holding the sockets when Dir is too deep for
	// unix socket paths; "" otherwise. Close removes it.
	socketRoot string

	closeOnce sync.Once
	closeErr  error
}

// Start creates and starts a cluster under opts.Dir: initdb of the primary, its configuration
// and roles, pg_basebackup of every standby, and it returns once the primary reports every
// standby streaming in pg_stat_replication. Without a deadline in ctx it gives up after two
// minutes. On error, everything started is stopped again.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	begin := time.Now()
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	dir, err := canonicalDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	run, err := newRunner(opts.BinDir, dir)
	if err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	if err := run.checkTraversable(dir); err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	ctx, cancel := withDefaultTimeout(ctx, defaultClusterStartTimeout)
	defer cancel()

	c := &Cluster{dir: dir, opts: opts, run: run, logger: opts.Logger}
	if err := c.bootstrap(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("localcluster: start: %w", err), c.Close())
	}
	c.logger.Info("localcluster: cluster ready", "dir", dir, "primary", c.Nodes[0].Name,
		"sync_standby_names", c.SyncStandbyNames(), "elapsed", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// Close stops every node (immediate shutdown; frozen nodes are thawed first; processes left by a
// killed node are killed) and waits until none of their processes is left. It does not remove
// Dir. Calling it again returns the first call's result.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		errs := make([]error, len(c.Nodes))
		var wg sync.WaitGroup
		for i, n := range c.Nodes {
			wg.Go(func() { errs[i] = n.shutdown(ctx) })
		}
		wg.Wait()
		if c.socketRoot != "" {
			errs = append(errs, os.RemoveAll(c.socketRoot))
		}
		c.closeErr = errors.Join(errs...)
		c.logger.Info("localcluster: cluster closed", "dir", c.dir, "err", c.closeErr)
	})
	return c.closeErr
}

// Node returns the node called name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// SyncStandbyNames returns the primary's synchronous_standby_names, e.g. "ANY 1 (pg2, pg3)".
func (c *Cluster) SyncStandbyNames() string {
	return syncStandbyNames(c.opts.Quorum, c.opts.Names[1:])
}

// bootstrap builds the cluster; on error the caller closes whatever it started.
func (c *Cluster) bootstrap(ctx context.Context) error {
	for _, name := range c.opts.Names {
		n, err := c.newNode(name)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	primary, standbys := c.Nodes[0], c.Nodes[1:]

	step := time.Now()
	initdbArgs := []string{"--pgdata", primary.DataDir, "--username", SuperUser, "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions"}
	if c.opts.Fast {
		// 1 MB WAL segments instead of 16: initdb and every pg_basebackup write far less.
		initdbArgs = append(initdbArgs, "--wal-segsize", "1")
	}
	err := c.run.run(ctx, "initdb", initdbArgs...)
	if err != nil {
		return err
	}
	if err := c.run.writeFile(filepath.Join(primary.DataDir, "pg_hba.conf"), []byte(renderHBA(c.opts.ExtraHBA, c.opts.HostSSLOnly))); err != nil {
		return err
	}
	if c.opts.TLS {
		// pg_basebackup copies the certificate and key to the standbys.
		if err := c.makeTLS(primary.DataDir); err != nil {
			return err
		}
	}
	// Every node gets this include through pg_basebackup's copy of postgresql.conf.
	include := fmt.Sprintf("\n# Settings managed by pgquorum localcluster.\ninclude '%s'\n", settingsFile)
	if err := appendFile(filepath.Join(primary.DataDir, "postgresql.conf"), []byte(include)); err != nil {
		return err
	}
	c.logger.Debug("localcluster: initdb done", "node", primary.Name, "elapsed", time.Since(step).Round(time.Millisecond))

	err = c.startNew(ctx, primary, func() nodeSettings {
		s := c.settings(primary)
		s.syncStandbyNames = c.SyncStandbyNames()
		return s
	})
	if err != nil {
		return err
	}
	if err := c.createRoles(ctx, primary); err != nil {
		return err
	}

	// The standbys are independent of each other: copy and start them in parallel.
	errs := make([]error, len(standbys))
	var wg sync.WaitGroup
	for i, n := range standbys {
		wg.Go(func() { errs[i] = c.startStandby(ctx, n, primary) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	names := make([]string, len(standbys))
	for i, n := range standbys {
		names[i] = n.Name
	}
	return primary.WaitReplicas(ctx, names...)
}

// newNode creates the node's directory and log file; initdb or pg_basebackup creates DataDir.
func (c *Cluster) newNode(name string) (*Node, error) {
	nodeDir := filepath.Join(c.dir, name)
	if err := c.run.mkdir(nodeDir); err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	socketDir := nodeDir
	if len(socketDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		if c.socketRoot == "" {
			root, err := os.MkdirTemp("", "pgq-")
			if err != nil {
				return nil, fmt.Errorf("node %s: short socket directory: %w", name, err)
			}
			c.socketRoot = root
			if err := os.Chmod(root, 0o755); err != nil {
				return nil, fmt.Errorf("node %s: %w", name, err)
			}
		}
		socketDir = filepath.Join(c.socketRoot, name)
		if err := c.run.mkdir(socketDir); err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
	}
	logFile := filepath.Join(c.dir, name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node %s: create log: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("node %s: create log: %w", name, err)
	}
	if err := c.run.own(logFile); err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return &Node{
		tls:       c.opts.TLS,
		Name:      name,
		DataDir:   filepath.Join(nodeDir, "data"),
		SocketDir: socketDir,
		LogFile:   logFile,
		run:       c.run,
		logger:    c.logger,
	}, nil
}

// settings returns the settings common to every node; the caller adds the role-specific ones.
func (c *Cluster) settings(n *Node) nodeSettings {
	return nodeSettings{name: n.Name, port: n.Port, socketDir: n.SocketDir, fast: c.opts.Fast, ssl: c.opts.TLS, extra: c.opts.ExtraConf}
}

// startNew starts a node for the first time on a fresh free port, writing its settings file
// (settings is called after the port is chosen). Should another process grab the port between
// our choice and PostgreSQL's bind, it tries again with another one.
func (c *Cluster) startNew(ctx context.Context, n *Node, settings func() nodeSettings) error {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		n.Port = port
		path := filepath.Join(n.DataDir, settingsFile)
		if err := c.run.writeFile(path, []byte(renderSettings(settings()))); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		err = n.Start(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return err
		}
		c.logger.Warn("localcluster: port taken, trying another", "node", n.Name, "port", port)
	}
}

// startStandby copies the primary with pg_basebackup and starts the copy as a standby.
func (c *Cluster) startStandby(ctx context.Context, n, primary *Node) error {
	step := time.Now()
	err := c.run.run(ctx, "pg_basebackup", "--pgdata", n.DataDir, "--host", "127.0.0.1",
		"--port", strconv.Itoa(primary.Port), "--username", ReplicationUser, "--no-password",
		"--wal-method", "stream", "--checkpoint", "fast", "--no-sync", "--no-manifest")
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	c.logger.Debug("localcluster: pg_basebackup done", "node", n.Name, "elapsed", time.Since(step).Round(time.Millisecond))
	if err := c.run.writeFile(filepath.Join(n.DataDir, "standby.signal"), nil); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return c.startNew(ctx, n, func() nodeSettings {
		s := c.settings(n)
		s.primaryConninfo = primaryConninfo(n.Name, primary.Port, c.caFile())
		return s
	})
}

// createRoles creates QueryUser and ReplicationUser on the primary.
func (c *Cluster) createRoles(ctx context.Context, primary *Node) error {
	conn, err := primary.connect(ctx, SuperUser, "")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	// synchronous_standby_names is already set and no standby exists yet: commit locally only.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = local"); err != nil {
		return fmt.Errorf("create roles: %w", err)
	}
	// Errors below name the role, never the statement: it holds a password.
	createQueryUser := fmt.Sprintf("CREATE ROLE %s SUPERUSER LOGIN PASSWORD %s", QueryUser, quoteSQLLiteral(QueryPassword))
	if _, err := conn.Exec(ctx, createQueryUser); err != nil {
		return fmt.Errorf("create role %s: %w", QueryUser, err)
	}
	if _, err := conn.Exec(ctx, "CREATE ROLE "+ReplicationUser+" REPLICATION LOGIN"); err != nil {
		return fmt.Errorf("create role %s: %w", ReplicationUser, err)
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// canonicalDir creates dir if it is missing (mode 0755) and returns it as an absolute path
// without symlinks, so that it compares equal to the working directory the kernel reports for
// PostgreSQL processes.
func canonicalDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", fmt.Errorf("dir %s: %w", dir, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("dir %s: %w", dir, err)
	}
	info, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("dir %s: %w", dir, err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("dir %s: not a directory", dir)
	}
	return resolved, nil
}

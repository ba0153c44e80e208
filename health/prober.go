package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultProbeTimeout bounds one probe, connect included, when
// ProberConfig.Timeout is zero.
const DefaultProbeTimeout = time.Second

// DefaultProbeApplicationName is the application_name probes connect with
// unless the connection string sets one, so DBAs can tell them apart in
// pg_stat_activity.
const DefaultProbeApplicationName = "pgquorum-health"

// ProberConfig configures a Prober.
type ProberConfig struct {
	// Node is the configured backend name; it is copied into every Probe.
	Node string

	// ConnString is a libpq connection string (keyword/value or URL) for a
	// role that may read the replication statistics: a superuser or a
	// member of pg_monitor. Without pg_monitor the LSN columns of
	// pg_stat_replication and most of pg_stat_wal_receiver read as NULL.
	// Only its first host is used.
	ConnString string

	// Timeout bounds one whole probe: connecting, authenticating and the
	// query. It is also sent as statement_timeout. Zero means
	// DefaultProbeTimeout.
	Timeout time.Duration

	// Logger receives connection drops at debug level; nil discards.
	Logger *slog.Logger
}

// Prober probes one PostgreSQL node. It keeps one connection open between
// probes and drops it after any failure; the next probe reconnects.
//
// A Prober is owned by one goroutine: Probe and Close must not be called
// concurrently.
type Prober struct {
	node    string
	config  *pgconn.Config
	timeout time.Duration
	logger  *slog.Logger

	conn   *pgconn.PgConn // nil when not connected; the probe's statements are prepared on it
	dialer *probeDialer   // the dialer behind conn
}

// Names of the probe's prepared statements on each probe connection.
const (
	probeNodeStatement     = "pgquorum_probe_node"
	probeReplicasStatement = "pgquorum_probe_replicas"
)

// NewProber checks cfg and parses its connection string. It does no I/O.
func NewProber(cfg ProberConfig) (*Prober, error) {
	if cfg.Node == "" {
		return nil, errors.New("health: prober needs a node name")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("health: prober for %s: negative timeout %v", cfg.Node, cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultProbeTimeout
	}
	config, err := pgconn.ParseConfig(cfg.ConnString)
	if err != nil {
		// pgconn's parse errors redact the password; they never echo it.
		return nil, fmt.Errorf("health: prober for %s: %w", cfg.Node, err)
	}
	// One node, one address: never wander to fallback hosts.
	config.Fallbacks = nil
	config.ConnectTimeout = timeout
	if config.RuntimeParams == nil {
		config.RuntimeParams = map[string]string{}
	}
	config.RuntimeParams["statement_timeout"] = strconv.FormatInt(max(timeout.Milliseconds(), 1), 10)
	if config.RuntimeParams["application_name"] == "" {
		config.RuntimeParams["application_name"] = DefaultProbeApplicationName
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Prober{node: cfg.Node, config: config, timeout: timeout, logger: logger}, nil
}

// Probe runs one probe, bounded by the configured timeout (and by ctx). It
// never returns an error: a failure is a Probe with Reachable false and Err
// set.
func (p *Prober) Probe(ctx context.Context) Probe {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	result, err := p.probe(ctx)
	duration := time.Since(start)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("no answer within %v: %w", p.timeout, err)
		}
		p.dropConnection(err)
		result = Probe{Err: err.Error()}
	} else {
		result.Reachable = true
	}
	result.Node = p.node
	result.At = start
	result.Duration = duration
	return result
}

// Close closes the connection, waiting at most the probe timeout.
func (p *Prober) Close() {
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	_ = p.conn.Close(ctx) // sends Terminate; errors do not matter, the socket is closed either way
	p.dropConnection(nil)
}

func (p *Prober) probe(ctx context.Context) (Probe, error) {
	if p.conn == nil {
		if err := p.connect(ctx); err != nil {
			return Probe{}, fmt.Errorf("connect: %w", err)
		}
	}
	// Both prepared statements in one round trip (ExecBatch appends its Sync
	// to the batch, so a batch serves once).
	batch := &pgconn.Batch{}
	batch.ExecPrepared(probeNodeStatement, nil, nil, nil)
	batch.ExecPrepared(probeReplicasStatement, nil, nil, nil)
	results, err := p.conn.ExecBatch(ctx, batch).ReadAll()
	if err != nil {
		return Probe{}, fmt.Errorf("probe query: %w", err)
	}
	return parseProbeResults(results)
}

func (p *Prober) connect(ctx context.Context) error {
	config := p.config.Copy()
	dialer := &probeDialer{}
	config.DialFunc = dialer.dial
	conn, err := pgconn.ConnectConfig(ctx, config)
	if err != nil {
		dialer.abandon()
		return err
	}
	p.conn, p.dialer = conn, dialer

	// PostgreSQL checks EXECUTE privileges on every function of a query
	// before running it, even in a CASE branch that is never taken, so the
	// probe query is chosen once per connection. It is prepared then: parsed
	// and planned once, not at every probe (a statement without parameters
	// keeps its generic plan).
	results, err := conn.Exec(ctx, `SELECT has_function_privilege('pg_ls_waldir()', 'EXECUTE')`).ReadAll()
	if err != nil {
		return fmt.Errorf("check privileges: %w", err)
	}
	nodeSQL, replicasSQL := probeSQL(len(results) == 1 && len(results[0].Rows) == 1 && string(results[0].Rows[0][0]) == "t")
	for _, stmt := range []struct{ name, sql string }{{probeNodeStatement, nodeSQL}, {probeReplicasStatement, replicasSQL}} {
		if _, err := conn.Prepare(ctx, stmt.name, stmt.sql, nil); err != nil {
			return fmt.Errorf("prepare the probe: %w", err)
		}
	}
	return nil
}

// dropConnection forgets the connection after a failure. pgconn closes a
// broken connection in a goroutine of its own, which may try to send a
// cancel request and then wait up to 15 s for the server; abandoning the
// dialer closes every socket it opened and refuses new ones, so that
// goroutine ends at once, and we wait (bounded) for it to finish.
func (p *Prober) dropConnection(cause error) {
	if p.conn == nil {
		return
	}
	if cause != nil {
		p.logger.Debug("health: dropping probe connection", "node", p.node, "err", cause)
	}
	p.dialer.abandon()
	// Close marks the connection closed and releases CleanupDone; it returns
	// at once when pgconn has already started closing it.
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	_ = p.conn.Close(ctx)
	select {
	case <-p.conn.CleanupDone():
	case <-time.After(p.timeout):
		p.logger.Warn("health: probe connection cleanup is slow", "node", p.node)
	}
	p.conn, p.dialer = nil, nil
}

// probeDialer dials the sockets of one probe connection (its cancel
// requests included) and can close them all at once.
type probeDialer struct {
	mu        sync.Mutex
	abandoned bool
	conns     []net.Conn
}

func (d *probeDialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	abandoned := d.abandoned
	d.mu.Unlock()
	if abandoned {
		return nil, errors.New("probe connection abandoned")
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.abandoned {
		conn.Close()
		return nil, errors.New("probe connection abandoned")
	}
	d.conns = append(d.conns, conn)
	return conn, nil
}

func (d *probeDialer) abandon() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.abandoned = true
	for _, conn := range d.conns {
		conn.Close()
	}
	d.conns = nil
}

// probeSQL returns the two statements of the probe, prepared on each probe
// connection and sent together, so one round trip: the node itself, and its
// walsenders. pg_is_in_recovery() is evaluated once, so a promotion during the
// query cannot mix primary and standby answers; the primary-only functions are
// guarded by it because they fail in recovery. Without the right to call
// pg_ls_waldir() the newest WAL file column is NULL.
func probeSQL(mayListWAL bool) (node, replicas string) {
	newestWALFile := "NULL::text"
	if mayListWAL {
		newestWALFile = `CASE WHEN r.in_recovery
    THEN (SELECT max(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$') END`
	}
	node = `SELECT current_setting('server_version_num'),
  current_setting('server_version'),
  r.in_recovery,
  CASE WHEN r.in_recovery THEN NULL ELSE pg_current_wal_lsn() END,
  CASE WHEN r.in_recovery THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
  pg_last_wal_receive_lsn(),
  pg_last_wal_replay_lsn(),
  (SELECT timeline_id FROM pg_control_checkpoint()),
  ` + newestWALFile + `,
  current_setting('synchronous_standby_names'),
  current_setting('synchronous_commit'),
  w.status, w.received_tli, w.flushed_lsn, w.latest_end_lsn,
  w.sender_host, w.sender_port, w.slot_name, w.conninfo
FROM (SELECT pg_is_in_recovery() AS in_recovery) AS r
LEFT JOIN pg_stat_wal_receiver AS w ON w.pid IS NOT NULL`
	replicas = `SELECT application_name, host(client_addr), state, sync_state, sync_priority,
  sent_lsn, write_lsn, flush_lsn, replay_lsn
FROM pg_stat_replication
ORDER BY application_name, pid`
	return node, replicas
}

// probe columns of the first statement, in order.
const (
	colVersionNum = iota
	colVersion
	colInRecovery
	colCurrentLSN
	colCurrentWALFile
	colReceiveLSN
	colReplayLSN
	colCheckpointTimeline
	colNewestWALFile
	colSyncStandbyNames
	colSynchronousCommit
	colReceiverStatus
	colReceivedTimeline
	colReceiverFlushedLSN
	colReceiverLatestEndLSN
	colSenderHost
	colSenderPort
	colSlotName
	colConnInfo
	probeColumns
)

const replicaColumns = 9

// parseProbeResults turns the results of probeSQL's two statements into a Probe.
func parseProbeResults(results []*pgconn.Result) (Probe, error) {
	if len(results) != 2 {
		return Probe{}, fmt.Errorf("probe query: got %d result sets, want 2", len(results))
	}
	main := results[0]
	if len(main.Rows) != 1 || len(main.Rows[0]) != probeColumns {
		return Probe{}, fmt.Errorf("probe query: got %d rows, want 1 row of %d columns", len(main.Rows), probeColumns)
	}
	row := main.Rows[0]
	var f fieldParser
	p := Probe{
		ServerVersionNum:  f.integer("server_version_num", row[colVersionNum]),
		ServerVersion:     string(row[colVersion]),
		InRecovery:        f.boolean("pg_is_in_recovery", row[colInRecovery]),
		CurrentLSN:        f.lsn("pg_current_wal_lsn", row[colCurrentLSN]),
		ReceiveLSN:        f.lsn("pg_last_wal_receive_lsn", row[colReceiveLSN]),
		ReplayLSN:         f.lsn("pg_last_wal_replay_lsn", row[colReplayLSN]),
		SyncStandbyNames:  string(row[colSyncStandbyNames]),
		SynchronousCommit: string(row[colSynchronousCommit]),
	}
	currentFileTimeline := f.walFileTimeline("pg_walfile_name", row[colCurrentWALFile])
	newestFileTimeline := f.walFileTimeline("pg_ls_waldir", row[colNewestWALFile])
	checkpointTimeline := f.timeline("pg_control_checkpoint", row[colCheckpointTimeline])
	if row[colReceiverStatus] != nil {
		p.WalReceiver = &WalReceiver{
			Status:           string(row[colReceiverStatus]),
			ReceivedTimeline: f.timeline("received_tli", row[colReceivedTimeline]),
			FlushedLSN:       f.lsn("flushed_lsn", row[colReceiverFlushedLSN]),
			LatestEndLSN:     f.lsn("latest_end_lsn", row[colReceiverLatestEndLSN]),
			SenderHost:       string(row[colSenderHost]),
			SenderPort:       f.integer("sender_port", row[colSenderPort]),
			SlotName:         string(row[colSlotName]),
			ApplicationName:  conninfoValue(string(row[colConnInfo]), "application_name"),
		}
	}
	for _, r := range results[1].Rows {
		if len(r) != replicaColumns {
			return Probe{}, fmt.Errorf("probe query: pg_stat_replication row has %d columns, want %d", len(r), replicaColumns)
		}
		p.Replication = append(p.Replication, Replica{
			ApplicationName: string(r[0]),
			ClientAddr:      string(r[1]),
			State:           string(r[2]),
			SyncState:       string(r[3]),
			SyncPriority:    f.integer("sync_priority", r[4]),
			SentLSN:         f.lsn("sent_lsn", r[5]),
			WriteLSN:        f.lsn("write_lsn", r[6]),
			FlushLSN:        f.lsn("flush_lsn", r[7]),
			ReplayLSN:       f.lsn("replay_lsn", r[8]),
		})
	}
	if f.err != nil {
		return Probe{}, fmt.Errorf("probe query: %w", f.err)
	}

	if p.InRecovery {
		p.Timeline = max(checkpointTimeline, newestFileTimeline)
		if p.WalReceiver != nil {
			p.Timeline = max(p.Timeline, p.WalReceiver.ReceivedTimeline)
		}
	} else {
		p.Timeline = currentFileTimeline
	}
	if spec, err := ParseSyncStandbyNames(p.SyncStandbyNames); err != nil {
		p.SyncStandbyNamesErr = err.Error()
	} else {
		p.SyncSpec = spec
	}
	return p, nil
}

// fieldParser parses text-format column values and keeps the first error,
// so a row can be parsed field by field and checked once. NULL (a nil
// slice) parses as the zero value.
type fieldParser struct {
	err error
}

func (f *fieldParser) fail(column string, value []byte, want string) {
	if f.err == nil {
		f.err = fmt.Errorf("column %s: %q is not %s", column, value, want)
	}
}

func (f *fieldParser) boolean(column string, value []byte) bool {
	switch string(value) {
	case "t":
		return true
	case "f", "":
		return false
	}
	f.fail(column, value, "a boolean")
	return false
}

func (f *fieldParser) integer(column string, value []byte) int {
	if value == nil {
		return 0
	}
	n, err := strconv.Atoi(string(value))
	if err != nil {
		f.fail(column, value, "an integer")
	}
	return n
}

func (f *fieldParser) timeline(column string, value []byte) uint32 {
	if value == nil {
		return 0
	}
	n, err := strconv.ParseUint(string(value), 10, 32)
	if err != nil {
		f.fail(column, value, "a timeline")
	}
	return uint32(n)
}

func (f *fieldParser) lsn(column string, value []byte) LSN {
	if value == nil {
		return 0
	}
	l, err := ParseLSN(string(value))
	if err != nil {
		f.fail(column, value, "an LSN")
	}
	return l
}

// walFileTimeline returns the timeline of a WAL segment file name such as
// 000000020000000000000003: its first 8 hex digits.
func (f *fieldParser) walFileTimeline(column string, value []byte) uint32 {
	if value == nil {
		return 0
	}
	if len(value) != 24 {
		f.fail(column, value, "a WAL file name")
		return 0
	}
	n, err := strconv.ParseUint(string(value[:8]), 16, 32)
	if err != nil {
		f.fail(column, value, "a WAL file name")
	}
	return uint32(n)
}

// conninfoValue returns the value of key in the conninfo that
// pg_stat_wal_receiver shows. PostgreSQL prints it as space-separated
// key=value pairs without quoting, so a value ends at the next space.
func conninfoValue(conninfo, key string) string {
	for _, pair := range strings.Fields(conninfo) {
		k, v, ok := strings.Cut(pair, "=")
		if ok && k == key {
			return v
		}
	}
	return ""
}

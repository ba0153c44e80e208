package health

import "time"

// Probe is what one probe of one PostgreSQL node saw. A Probe is a value:
// it is never modified after Prober.Probe returns it, and its slices must be
// treated as read-only by everyone who receives a copy.
//
// When Reachable is false only Node, At, Duration and Err are set.
type Probe struct {
	Node      string        // the configured backend name
	At        time.Time     // when the probe started (wall clock of the probing process)
	Duration  time.Duration // how long the probe took, connect included
	Reachable bool          // the node answered the whole probe
	Err       string        // why not, when Reachable is false

	ServerVersion    string // server_version, for example "15.18 (Debian 15.18-0+deb12u1)"
	ServerVersionNum int    // server_version_num, for example 150018

	// InRecovery is pg_is_in_recovery(): true on a standby.
	InRecovery bool

	// Timeline is the node's current timeline.
	//
	// On a primary it is the timeline WAL is being written on, read from
	// pg_walfile_name(pg_current_wal_lsn()). It changes at the moment of
	// promotion; pg_control_checkpoint() would lag until the end-of-recovery
	// checkpoint has finished.
	//
	// On a standby it is the greatest of: received_tli of
	// pg_stat_wal_receiver (only while a WAL receiver runs), the timeline of
	// the newest WAL segment file in pg_wal (pg_ls_waldir(), when the probing
	// role may call it: superuser or pg_monitor), and
	// pg_control_checkpoint().timeline_id (which lags: it moves at the next
	// restartpoint). The pg_wal source keeps the answer stable while the WAL
	// receiver is stopped, as it is when the coordinator freezes a standby.
	// History files are deliberately ignored: a standby fetches the history
	// of a timeline it then refuses to follow when it has diverged.
	Timeline uint32

	CurrentLSN LSN // pg_current_wal_lsn(): primary only, 0 on a standby
	ReceiveLSN LSN // pg_last_wal_receive_lsn(): WAL received and flushed by streaming; 0 if none (also on a never-standby primary)
	ReplayLSN  LSN // pg_last_wal_replay_lsn(): WAL replayed; 0 if none

	// WalReceiver is the row of pg_stat_wal_receiver, nil when no WAL
	// receiver runs (always on a primary; on a standby whose upstream is
	// unset, unreachable or being retried), and also when the probing role
	// lacks pg_read_all_stats (PostgreSQL then hides the row's details).
	WalReceiver *WalReceiver

	// Replication holds the rows of pg_stat_replication: the walsenders of
	// this node, ordered by application_name. Normally empty on a standby.
	Replication []Replica

	SyncStandbyNames    string   // synchronous_standby_names as set
	SyncSpec            SyncSpec // SyncStandbyNames parsed; zero value (SyncOff) when it cannot be parsed
	SyncStandbyNamesErr string   // why SyncStandbyNames cannot be parsed; "" when it can
	SynchronousCommit   string   // synchronous_commit of the probing session: off, local, remote_write, on, remote_apply
}

// Role returns "primary" or "standby" for a reachable node, "" otherwise.
func (p Probe) Role() string {
	switch {
	case !p.Reachable:
		return ""
	case p.InRecovery:
		return "standby"
	default:
		return "primary"
	}
}

// WalReceiver is the pg_stat_wal_receiver row of a standby.
type WalReceiver struct {
	Status           string // streaming, starting, waiting, restarting, stopping
	ReceivedTimeline uint32 // received_tli
	FlushedLSN       LSN    // flushed_lsn: WAL received and flushed to disk
	LatestEndLSN     LSN    // latest_end_lsn: last WAL position reported by the upstream
	SenderHost       string // sender_host: the upstream's host (or socket directory)
	SenderPort       int    // sender_port
	SlotName         string // slot_name, "" when no slot is used
	// ApplicationName is the application_name in the WAL receiver's
	// conninfo: the name this standby has in its upstream's
	// pg_stat_replication (and must have in synchronous_standby_names).
	// "" when the conninfo does not set it.
	ApplicationName string
}

// Replica is one row of pg_stat_replication on the probed node: a walsender
// serving a standby or another WAL client (pg_basebackup, pg_receivewal).
type Replica struct {
	ApplicationName string // application_name: the name matched against synchronous_standby_names
	ClientAddr      string // client_addr, "" for a Unix-socket client
	State           string // startup, catchup, streaming, backup, stopping
	SyncState       string // async, potential, sync, quorum
	SyncPriority    int    // sync_priority
	SentLSN         LSN    // sent_lsn
	WriteLSN        LSN    // write_lsn
	FlushLSN        LSN    // flush_lsn: what the standby has confirmed durable
	ReplayLSN       LSN    // replay_lsn
}

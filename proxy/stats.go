package proxy

import "sync/atomic"

// Stats are the Server's counters. Current values go up and down; Total values only go up.
type Stats struct {
	ClientConnections      int64  // client connections open now (in startup or relaying)
	TotalClientConnections uint64 // client connections accepted since start
	StartupConnections     int64  // client connections not authenticated yet, now
	RefusedConnections     uint64 // connections refused at once by the limits since start
	NamedPortals           int64  // named portals the sessions track now (forgotten as PostgreSQL forgets them)
	Sessions               int64  // sessions relaying now (startup and authentication done)
	TotalSessions          uint64 // sessions that reached the relay since start
	StartupFailures        uint64 // connections closed during startup with an error (bad input, auth, backend)
	CancelRequests         uint64 // CancelRequest packets received
	CancelUnknown          uint64 // cancel requests whose key matched no session (not logged one by one)
	CancelRefused          uint64 // cancel requests not sent: the backend waited for synchronous replication
	CancelForwarded        uint64 // cancel requests forwarded to the proxy node that owns the session
	BytesFromClients       uint64 // relayed bytes read from clients
	BytesToClients         uint64 // relayed bytes written to clients
}

// counters are the live atomic counters behind Stats.
type counters struct {
	clientConnections      atomic.Int64
	totalClientConnections atomic.Uint64
	startupConnections     atomic.Int64
	refusedConnections     atomic.Uint64
	namedPortals           atomic.Int64
	sessions               atomic.Int64
	totalSessions          atomic.Uint64
	startupFailures        atomic.Uint64
	cancelRequests         atomic.Uint64
	cancelUnknown          atomic.Uint64
	cancelRefused          atomic.Uint64
	cancelForwarded        atomic.Uint64
	bytesFromClients       atomic.Uint64
	bytesToClients         atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		ClientConnections:      c.clientConnections.Load(),
		TotalClientConnections: c.totalClientConnections.Load(),
		StartupConnections:     c.startupConnections.Load(),
		RefusedConnections:     c.refusedConnections.Load(),
		NamedPortals:           c.namedPortals.Load(),
		Sessions:               c.sessions.Load(),
		TotalSessions:          c.totalSessions.Load(),
		StartupFailures:        c.startupFailures.Load(),
		CancelRequests:         c.cancelRequests.Load(),
		CancelUnknown:          c.cancelUnknown.Load(),
		CancelRefused:          c.cancelRefused.Load(),
		CancelForwarded:        c.cancelForwarded.Load(),
		BytesFromClients:       c.bytesFromClients.Load(),
		BytesToClients:         c.bytesToClients.Load(),
	}
}

package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/conninfo"
)

// This file gathers the facts decide works on: clusterFactsOf reads them out of
// GET /cluster, observe looks at the data directory and its server. Observing
// changes nothing.

// clusterFactsOf turns a view of the agreed state into the facts about node.
func clusterFactsOf(view admin.ClusterView, trusted bool, node string) clusterFacts {
	c := clusterFacts{
		Known:          trusted,
		Epoch:          view.Epoch,
		Primary:        view.Primary,
		PrimaryAddress: nodeAddress(view, view.Primary),
		Paused:         view.Paused,
		Fenced:         slices.Contains(view.Fenced, node),
	}
	if f := view.Failover; f != nil {
		c.Failover = &failoverFacts{Kind: string(f.Kind), OldPrimary: f.OldPrimary, Next: string(f.Next),
			Blocked: f.Blocked, Reason: f.BlockedReason, Candidate: f.Candidate}
	}
	return c
}

func nodeAddress(view admin.ClusterView, name string) string {
	for _, n := range view.Nodes {
		if n.Name == name {
			return n.Address
		}
	}
	return ""
}

// observe looks at the data directory and, when a server runs in it, asks it
// over SQL at address (the node's own configured address). Errors of the
// look-ups themselves are returned: a fact that cannot be read is not guessed.
func (h *host) observe(ctx context.Context, address string) (localFacts, error) {
	l := localFacts{Node: h.node, Clone: h.cloneState()}
	switch _, err := os.Stat(filepath.Join(h.dataDir, "PG_VERSION")); {
	case err == nil:
		l.Data = dataOK
	case errors.Is(err, os.ErrNotExist):
		if _, derr := os.Stat(h.dataDir); errors.Is(derr, os.ErrNotExist) {
			l.Data = dataMissing
		} else {
			l.Data = dataNotCluster
		}
	default:
		return l, fmt.Errorf("data directory: %w", err)
	}

	running := false
	if l.Data == dataOK {
		_, lock, err := postmasterLock(h.dataDir)
		if err != nil {
			return l, err
		}
		switch lock {
		case lockRunning:
			running = true
		case lockUnknown:
			if running, err = h.pg.pgCtlStatus(ctx); err != nil {
				return l, err
			}
		}
	}
	if !running {
		l.Busy = append(liveProcessesIn(h.dataDir), liveProcessesIn(h.clonePath())...)
		if l.Data != dataOK || len(l.Busy) > 0 {
			return l, nil
		}
		cd, err := h.pg.controlData(ctx)
		if err != nil {
			return l, err
		}
		l.Control = cd.State
		l.StandbySignal = fileExists(filepath.Join(h.dataDir, "standby.signal"))
		return l, nil
	}

	l.Server = serverNoAnswer
	if address == "" {
		return l, nil
	}
	status, err := h.localStatus(ctx, address)
	if err != nil {
		h.logger.Debug("the local server does not answer", "address", address, "err", err)
		return l, nil
	}
	l.Server = serverRunning
	l.InRecovery = status.inRecovery
	l.StreamingFrom = status.streamingFrom
	l.ConninfoTarget = conninfoTarget(status.primaryConninfo)
	return l, nil
}

// localServerStatus is what the running local server says about itself.
type localServerStatus struct {
	inRecovery      bool
	streamingFrom   string // sender host:port while the WAL receiver streams
	primaryConninfo string
}

// localStatus asks the local server whether it is a standby and where its WAL
// receiver streams from (pg_stat_wal_receiver shows the sender to superusers
// and pg_read_all_stats).
func (h *host) localStatus(ctx context.Context, address string) (localServerStatus, error) {
	conn, err := h.connect(ctx, address)
	if err != nil {
		return localServerStatus{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	qctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var s localServerStatus
	var status, host *string
	var port *int32
	err = conn.QueryRow(qctx, `SELECT pg_is_in_recovery(), current_setting('primary_conninfo'),
		w.status, w.sender_host, w.sender_port
		FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS w ON true`).
		Scan(&s.inRecovery, &s.primaryConninfo, &status, &host, &port)
	if err != nil {
		return localServerStatus{}, fmt.Errorf("ask the local server: %w", err)
	}
	if status != nil && *status == "streaming" && host != nil && port != nil {
		s.streamingFrom = net.JoinHostPort(*host, strconv.Itoa(int(*port)))
	}
	return s, nil
}

// conninfoTarget returns host:port of a primary_conninfo ("" when it has no host).
func conninfoTarget(s string) string {
	params, err := conninfo.Parse(s)
	if err != nil || len(params) == 0 {
		return ""
	}
	host, ok := params.Get("host")
	if !ok || host == "" {
		if host, ok = params.Get("hostaddr"); !ok || host == "" {
			return ""
		}
	}
	port, ok := params.Get("port")
	if !ok || port == "" {
		port = strconv.Itoa(defaultPort)
	}
	return net.JoinHostPort(host, port)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

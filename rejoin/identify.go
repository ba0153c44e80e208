package rejoin

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/pgquorum/pgquorum/admin"
)

// This file finds out which configured backend a data directory is: the one
// whose address has the port the data directory's configuration listens on (and,
// when several backends use that port, whose host is this machine).

// defaultPort is PostgreSQL's port when the configuration sets none.
const defaultPort = 5432

// localPort returns the port the data directory's configuration listens on.
func localPort(settings map[string]string) (int, error) {
	value, ok := settings["port"]
	if !ok {
		return defaultPort, nil
	}
	port, err := strconv.Atoi(strings.TrimSpace(value))
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("port = %q in the configuration is not a port number", value)
	}
	return port, nil
}

// matchNode returns the backend that is this data directory: the only one whose
// address has port, or among several, the only one whose host is local
// (isLocal). It errors when none or more than one match.
func matchNode(nodes []admin.NodeView, port int, isLocal func(host string) bool) (string, error) {
	var byPort []admin.NodeView
	for _, n := range nodes {
		_, p, err := net.SplitHostPort(n.Address)
		if err == nil && p == strconv.Itoa(port) {
			byPort = append(byPort, n)
		}
	}
	if len(byPort) == 1 {
		return byPort[0].Name, nil
	}
	if len(byPort) == 0 {
		return "", fmt.Errorf("%w: no configured backend listens on port %d, the port of this data directory (backends: %s); pass --node NAME",
			ErrUnknownNode, port, describeNodes(nodes))
	}
	var local []string
	for _, n := range byPort {
		host, _, _ := net.SplitHostPort(n.Address)
		if isLocal(host) {
			local = append(local, n.Name)
		}
	}
	if len(local) == 1 {
		return local[0], nil
	}
	return "", fmt.Errorf("%w: cannot tell which backend this data directory is: %d backends use port %d and %d of them are on this host (backends: %s); pass --node NAME",
		ErrUnknownNode, len(byPort), port, len(local), describeNodes(nodes))
}

func describeNodes(nodes []admin.NodeView) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = n.Name + "=" + n.Address
	}
	return strings.Join(parts, ", ")
}

// identify returns the backend name of the data directory: opts.NodeName checked
// against the configured backends, or derived from the port. A given name that
// contradicts the port (the port is unambiguously another backend's) is refused:
// the wrong name would make the node stream under another node's identity.
func (h *host) identify(ctx context.Context, view admin.ClusterView, settings map[string]string, settingsErr error) (string, error) {
	isLocal := func(host string) bool { return isLocalHost(ctx, host) }
	derived, deriveErr := "", settingsErr
	if settingsErr == nil {
		port, err := localPort(settings)
		if err != nil {
			deriveErr = err
		} else {
			derived, deriveErr = matchNode(view.Nodes, port, isLocal)
		}
	}
	name := h.opts.NodeName
	if name == "" {
		if deriveErr != nil {
			return "", fmt.Errorf("which node is %s? %w", h.dataDir, deriveErr)
		}
		return derived, nil
	}
	known := slices.ContainsFunc(view.Nodes, func(n admin.NodeView) bool { return n.Name == name })
	if !known {
		return "", fmt.Errorf("%w: %q is not a configured backend (backends: %s)", ErrUnknownNode, name, describeNodes(view.Nodes))
	}
	if deriveErr == nil && derived != name {
		return "", fmt.Errorf("--node %s contradicts the data directory: its port belongs to backend %s", name, derived)
	}
	if deriveErr != nil {
		h.logger.Warn("cannot confirm --node from the data directory's configuration; trusting it", "node", name, "err", deriveErr)
	}
	return name, nil
}

package rejoin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pgquorum/pgquorum/admin"
)

// host is the database host as rejoin and the agent see it: one data directory,
// its server, the PostgreSQL programs, and the admin APIs of the cluster. It is
// used by one goroutine (Run's, or the agent loop's).
type host struct {
	opts    Options
	dataDir string
	// configFile is the main configuration file; outsideConfig says whether it
	// lives outside the data directory (the Debian layout).
	configFile    string
	outsideConfig bool
	logger        *slog.Logger
	admin         *adminPool
	pg            *programs
	node          string // this node's backend name, once identified
}

// newHost checks the options and finds the programs and the configuration.
func newHost(opts Options) (*host, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &host{opts: opts, dataDir: opts.PGData, logger: opts.Logger, admin: newAdminPool(opts)}
	pg, err := newPrograms(opts.BinDir, h.dataDir, h.clonePath(), h.logger)
	if err != nil {
		return nil, err
	}
	h.pg = pg
	h.configFile, h.outsideConfig, err = findConfigFile(opts.ConfigFile, h.dataDir)
	if err != nil {
		if opts.ConfigFile != "" || fileExists(filepath.Join(h.dataDir, "PG_VERSION")) {
			return nil, err
		}
		// A data directory without a cluster (empty, or a re-clone's missing
		// one): the configuration comes with the copy.
		h.logger.Debug("no configuration file found yet", "err", err)
	}
	if h.outsideConfig {
		if pg.configOption, err = configFileOption(h.configFile); err != nil {
			return nil, err
		}
		if v, err := majorVersion(h.dataDir, h.clonePath()); err == nil && v < 15 {
			return nil, fmt.Errorf("the configuration lives outside the data directory (%s), which needs PostgreSQL 15 or later "+
				"(pg_rewind --config-file); this is %d: keep postgresql.conf in the data directory, or upgrade", h.configFile, v)
		}
		h.logger.Info("the server's configuration lives outside the data directory", "config_file", h.configFile)
	}
	return h, nil
}

// settings reads the configuration the server would start with.
func (h *host) settings() (map[string]string, error) {
	if h.configFile == "" {
		// None at start: the data directory had no cluster yet (a re-clone brings one).
		file, outside, err := findConfigFile("", h.dataDir)
		if err != nil {
			return nil, err
		}
		h.configFile, h.outsideConfig = file, outside
	}
	if h.outsideConfig {
		return readSettings(h.configFile, h.dataDir)
	}
	return readSettings("", h.dataDir)
}

// identifyNode sets h.node from the options or the data directory's port.
func (h *host) identifyNode(ctx context.Context, view admin.ClusterView) error {
	if h.node != "" {
		return nil
	}
	settings, settingsErr := h.settings()
	name, err := h.identify(ctx, view, settings, settingsErr)
	if err != nil {
		return err
	}
	h.node = name
	h.logger = h.logger.With("node", name)
	return nil
}

// majorVersion reads PG_VERSION of the first directory that has one.
func majorVersion(dirs ...string) (int, error) {
	var lastErr error
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
		if err != nil {
			lastErr = err
			continue
		}
		return strconv.Atoi(strings.TrimSpace(string(data)))
	}
	return 0, lastErr
}

// primaryOf returns the agreed primary of view and its address.
func primaryOf(view admin.ClusterView) (string, string, error) {
	if view.Primary == "" {
		return "", "", fmt.Errorf("%w at epoch %d", ErrNoPrimary, view.Epoch)
	}
	address := nodeAddress(view, view.Primary)
	if _, _, err := net.SplitHostPort(address); err != nil {
		return "", "", fmt.Errorf("%w: the agreed primary %s has no usable address (%q)", ErrAdmin, view.Primary, address)
	}
	return view.Primary, address, nil
}

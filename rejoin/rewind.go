package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// This file brings the data directory onto the primary's timeline with
// pg_rewind (reclone.go copies it afresh instead). pg_rewind copies the
// primary's configuration files too, so the node's own are kept aside first and
// put back after (keptconf.go).

// rewind runs pg_rewind from the primary at address, detached (see runLogged),
// with the data directory as its working directory. A failure is a *RewindError.
func (h *host) rewind(ctx context.Context, primary, address string, settings map[string]string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("primary address %q: %w", address, err)
	}
	args := []string{"--target-pgdata", h.dataDir, "--source-server", h.superuserConninfo(host, port).String()}
	if h.outsideConfig {
		// For the single-user crash recovery pg_rewind runs on a killed primary.
		args = append(args, "--config-file", h.configFile)
	}
	if cmd := settings["restore_command"]; cmd != "" {
		// WAL the target needs but has recycled is fetched from the archive.
		args = append(args, "--restore-target-wal")
	}
	env := []string{"LC_ALL=C"}
	if h.opts.SourcePassword != "" {
		env = append(env, "PGPASSWORD="+h.opts.SourcePassword)
	}
	start := time.Now()
	output, err := h.pg.runLogged(ctx, h.opts.ServerLog, h.dataDir, env, "pg_rewind", args...)
	if err != nil {
		var left *LeftRunningError
		if errors.As(err, &left) {
			return err
		}
		return &RewindError{DataDir: h.dataDir, Primary: primary, Reason: rewindReason(output), Output: output, Err: err}
	}
	h.logger.Info("pg_rewind done", "primary", primary, "elapsed", time.Since(start).Round(time.Millisecond),
		"output", lastLine(output))
	return nil
}

// ensureCleanStandby brings a standby that was killed to a clean shutdown
// ("shut down in recovery"), which pg_rewind needs: pg_rewind's own way, a
// single-user crash recovery, refuses standby.signal. The server is started as
// the standby it is, and stopped again.
func (h *host) ensureCleanStandby(ctx context.Context) error {
	cd, err := h.pg.controlData(ctx)
	if err != nil {
		return err
	}
	if cleanlyStopped(cd.State) || !fileExists(filepath.Join(h.dataDir, "standby.signal")) {
		return nil
	}
	h.logger.Info("the standby was not shut down cleanly: starting and stopping it (frozen) before pg_rewind", "state", cd.State)
	if err := h.configureStandby(h.dataDir, nil); err != nil {
		return err
	}
	if err := h.pg.startServer(ctx, h.opts.ServerLog, h.opts.StartTimeout); err != nil {
		return fmt.Errorf("start the standby to shut it down cleanly before pg_rewind: %w", err)
	}
	if err := h.pg.stopServer(ctx, h.opts.StopTimeout); err != nil {
		return fmt.Errorf("stop the standby cleanly before pg_rewind: %w", err)
	}
	return nil
}

// rewindReason picks pg_rewind's explanation out of its output: its error,
// detail and hint lines and the server's FATAL/PANIC lines (from the single-user
// crash recovery it runs first), at most five; else the last line.
func rewindReason(output string) string {
	var picked []string
	for _, line := range strings.Split(output, "\n") {
		line = strings.TrimSpace(line)
		lower := strings.ToLower(line)
		if strings.Contains(lower, "error:") || strings.Contains(lower, "fatal:") || strings.Contains(line, "PANIC:") ||
			strings.Contains(lower, "hint:") {
			picked = append(picked, line)
		}
	}
	if len(picked) > 5 {
		picked = picked[len(picked)-5:]
	}
	if len(picked) == 0 {
		if l := lastLine(output); l != "" {
			return l
		}
		return "pg_rewind failed without output"
	}
	return strings.Join(picked, "; ")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

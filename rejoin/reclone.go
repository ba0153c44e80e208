package rejoin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
)

// This file copies the primary afresh with pg_basebackup, for a node that
// pg_rewind cannot rewind. It never deletes the old data directory and can be
// interrupted at any point and run again:
//
//  1. copy the primary into DIR.pgquorum-clone (a leftover copy without the
//     marker of step 3 is partial: it is removed and copied again);
//  2. put the node's own configuration files (kept aside before the copy,
//     keptconf.go) and standby.signal with the new primary_conninfo into the
//     copy, so that it is a standby from the moment it takes the data
//     directory's place;
//  3. write the marker DIR.pgquorum-clone.complete: the copy is whole;
//  4. move DIR aside to DIR.pgquorum-old-<time>, move the copy to DIR, remove
//     the marker.
//
// Step 4 is two renames in one directory; a run that finds the marker finishes
// whatever part of them is left.

// clonePath is where a re-clone copies the primary.
func (h *host) clonePath() string { return h.dataDir + ".pgquorum-clone" }

// cloneMarker exists once the copy at clonePath is whole and configured.
func (h *host) cloneMarker() string { return h.dataDir + ".pgquorum-clone.complete" }

func (h *host) cloneState() cloneState {
	switch {
	case fileExists(h.cloneMarker()):
		return cloneComplete
	case fileExists(h.clonePath()):
		return clonePartial
	}
	return cloneNone
}

// reclone copies the primary at address into the data directory's place (or
// finishes an interrupted copy), the old directory moved aside. It returns where
// the old directory went ("" if there was none).
func (h *host) reclone(ctx context.Context, primary, address string, replication conninfo.Params) (string, error) {
	if h.cloneState() != cloneComplete {
		if err := h.copyPrimary(ctx, primary, replication); err != nil {
			return "", err
		}
	} else {
		h.logger.Info("a complete copy of an interrupted re-clone is waiting: putting it in place", "copy", h.clonePath())
	}
	return h.swapClone()
}

// copyPrimary runs steps 1-3.
func (h *host) copyPrimary(ctx context.Context, primary string, replication conninfo.Params) error {
	clone := h.clonePath()
	if fileExists(clone) {
		h.logger.Warn("removing the partial copy of an interrupted re-clone", "copy", clone)
		if err := os.RemoveAll(clone); err != nil {
			return fmt.Errorf("re-clone: remove the partial copy %s: %w", clone, err)
		}
	}
	mode := os.FileMode(0o700)
	if info, err := os.Stat(h.dataDir); err == nil {
		mode = info.Mode().Perm()
		if !fileExists(h.keptConfPath()) {
			if err := h.keepConfigFiles(); err != nil {
				return fmt.Errorf("re-clone: %w", err)
			}
		}
	}
	if err := os.Mkdir(clone, mode); err != nil {
		return fmt.Errorf("re-clone: create %s: %w", clone, err)
	}
	if err := h.pg.own(clone); err != nil {
		return fmt.Errorf("re-clone: %w", err)
	}
	// pg_basebackup's own application_name: a base backup streams WAL too, and
	// must never count as the node in synchronous_standby_names.
	params := replication.Without("password").With("application_name", "pgquorum-rejoin-basebackup")
	var env []string
	if password, ok := replication.Get("password"); ok && password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	start := time.Now()
	h.logger.Info("copying the primary with pg_basebackup", "primary", primary, "into", clone)
	_, err := h.pg.runLogged(ctx, h.opts.ServerLog, clone, env, "pg_basebackup", "--pgdata", clone, "--dbname", params.String(),
		"--wal-method", "stream", "--checkpoint", "fast", "--no-password")
	if err != nil {
		var left *LeftRunningError
		if errors.As(err, &left) {
			return err
		}
		return fmt.Errorf("re-clone from the primary %s with pg_basebackup (as %s): %w; the data directory is untouched", primary, params.Redacted(), err)
	}
	h.logger.Info("pg_basebackup done", "primary", primary, "elapsed", time.Since(start).Round(time.Millisecond))
	if err := h.restoreKeptConfigFiles(clone); err != nil {
		return fmt.Errorf("re-clone: %w", err)
	}
	if err := h.configureStandby(clone, replication); err != nil {
		return fmt.Errorf("re-clone: %w", err)
	}
	if err := h.pg.writeFile(h.cloneMarker(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return fmt.Errorf("re-clone: %w", err)
	}
	return nil
}

// swapClone runs step 4.
func (h *host) swapClone() (string, error) {
	clone, aside := h.clonePath(), ""
	if fileExists(clone) {
		if err := os.Remove(h.dataDir); err == nil {
			// It was empty: nothing to keep (os.Remove never removes a directory with files).
			h.logger.Info("removed the empty data directory", "dir", h.dataDir)
		} else if fileExists(h.dataDir) {
			aside = h.dataDir + ".pgquorum-old-" + time.Now().UTC().Format("20060102T150405Z")
			if err := os.Rename(h.dataDir, aside); err != nil {
				return "", fmt.Errorf("re-clone: move the data directory aside to %s: %w "+
					"(a mount point cannot be moved: keep the data directory a subdirectory of the volume)", aside, err)
			}
			h.logger.Info("moved the data directory aside", "from", h.dataDir, "to", aside)
		}
		if err := os.Rename(clone, h.dataDir); err != nil {
			return aside, fmt.Errorf("re-clone: move the copy %s to %s: %w", clone, h.dataDir, err)
		}
		if err := syncDir(filepath.Dir(h.dataDir)); err != nil {
			return aside, err
		}
	}
	if err := os.Remove(h.cloneMarker()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return aside, fmt.Errorf("re-clone: remove the marker: %w", err)
	}
	return aside, syncDir(filepath.Dir(h.dataDir))
}

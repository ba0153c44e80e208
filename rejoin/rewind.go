package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
)

// This file brings the data directory onto the primary's timeline: pg_rewind, or
// with Reclone a fresh pg_basebackup into a new directory. Both copy the
// primary's configuration files too, so the node's own are saved first and put
// back after.

// savedFile is one configuration file of the data directory, kept in memory
// across the rewind or re-clone.
type savedFile struct {
	Name string
	Data []byte
	Mode os.FileMode
}

// saveConfigFiles reads every *.conf file at the top of the data directory
// (postgresql.conf, postgresql.auto.conf, pg_hba.conf, pg_ident.conf and files
// they include from there).
func saveConfigFiles(dataDir string) ([]savedFile, error) {
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, fmt.Errorf("save configuration files: %w", err)
	}
	var saved []savedFile
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		path := filepath.Join(dataDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("save configuration file: %w", err)
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("save configuration file: %w", err)
		}
		saved = append(saved, savedFile{Name: e.Name(), Data: data, Mode: info.Mode().Perm()})
	}
	return saved, nil
}

// restoreConfigFiles writes the saved files back over the primary's copies.
func (r *rejoiner) restoreConfigFiles(saved []savedFile) error {
	for _, f := range saved {
		if err := r.pg.writeFile(filepath.Join(r.dataDir, f.Name), f.Data, f.Mode); err != nil {
			return fmt.Errorf("restore configuration file: %w", err)
		}
	}
	return nil
}

// rewind runs pg_rewind from the primary at address. A failure is a *RewindError.
func (r *rejoiner) rewind(ctx context.Context, primary, address string, settings map[string]string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("primary address %q: %w", address, err)
	}
	args := []string{"--target-pgdata", r.dataDir, "--source-server", r.superuserConninfo(host, port).String()}
	if cmd := settings["restore_command"]; cmd != "" {
		// WAL the target needs but has recycled is fetched from the archive.
		args = append(args, "--restore-target-wal")
	}
	var env []string
	if r.opts.SourcePassword != "" {
		env = append(env, "PGPASSWORD="+r.opts.SourcePassword)
	}
	start := time.Now()
	output, err := r.pg.run(ctx, env, "pg_rewind", args...)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pg_rewind interrupted: %w", ctx.Err())
		}
		return &RewindError{DataDir: r.dataDir, Primary: primary, Reason: rewindReason(output), Output: output, Err: err}
	}
	r.logger.Info("pg_rewind done", "primary", primary, "elapsed", time.Since(start).Round(time.Millisecond),
		"output", lastLine(output))
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

// reclone moves the data directory aside and copies the primary into a fresh one
// with pg_basebackup. If the copy fails, the fresh directory is removed and the
// old one put back. It returns where the old directory went.
func (r *rejoiner) reclone(ctx context.Context, primary, address string, replication conninfo.Params) (string, error) {
	info, err := os.Stat(r.dataDir)
	if err != nil {
		return "", fmt.Errorf("re-clone: %w", err)
	}
	aside := r.dataDir + ".pgquorum-old-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(r.dataDir, aside); err != nil {
		return "", fmt.Errorf("re-clone: move the data directory aside: %w", err)
	}
	r.logger.Info("moved the data directory aside", "from", r.dataDir, "to", aside)
	undo := func(cause error) error {
		if err := os.RemoveAll(r.dataDir); err != nil {
			return errors.Join(cause, fmt.Errorf("remove the partial copy %s: %w", r.dataDir, err))
		}
		if err := os.Rename(aside, r.dataDir); err != nil {
			return errors.Join(cause, fmt.Errorf("put the old data directory %s back to %s: %w", aside, r.dataDir, err))
		}
		return cause
	}
	if err := os.Mkdir(r.dataDir, info.Mode().Perm()); err != nil {
		return "", undo(fmt.Errorf("re-clone: create %s: %w", r.dataDir, err))
	}
	if err := r.pg.own(r.dataDir); err != nil {
		return "", undo(fmt.Errorf("re-clone: %w", err))
	}
	// pg_basebackup's own application_name: a base backup streams WAL too, and
	// must never count as the node in synchronous_standby_names.
	params := replication.Without("password").With("application_name", "pgquorum-rejoin-basebackup")
	var env []string
	if password, ok := replication.Get("password"); ok && password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	start := time.Now()
	_, err = r.pg.run(ctx, env, "pg_basebackup", "--pgdata", r.dataDir, "--dbname", params.String(),
		"--wal-method", "stream", "--checkpoint", "fast", "--no-password")
	if err != nil {
		return "", undo(fmt.Errorf("re-clone from the primary %s with pg_basebackup (as %s): %w", primary, params.Redacted(), err))
	}
	r.logger.Info("pg_basebackup done", "primary", primary, "elapsed", time.Since(start).Round(time.Millisecond))
	return aside, nil
}

package rejoin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// This file keeps the node's own configuration files across pg_rewind and
// pg_basebackup, which copy the primary's over them. The copies are kept on
// disk next to the data directory (DIR.pgquorum-conf), not in memory: a
// pg_rewind left running by a driver that died finishes on its own, and the
// next driver must still put the node's own files back before the server
// starts (with the primary's postgresql.conf it could listen on the primary's
// port). So every start, rewind and re-clone first puts back a kept set it finds.

// savedFile is one configuration file of the data directory.
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
		data, err := os.ReadFile(filepath.Join(dataDir, e.Name()))
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

// keptConfPath is where the node's configuration files are kept during a
// rewind or re-clone.
func (h *host) keptConfPath() string { return h.dataDir + ".pgquorum-conf" }

// keepConfigFiles copies the data directory's *.conf files to keptConfPath,
// atomically (a temporary directory renamed into place): a kept set is always
// whole.
func (h *host) keepConfigFiles() error {
	kept := h.keptConfPath()
	if fileExists(kept) {
		return fmt.Errorf("configuration files are kept at %s already", kept)
	}
	saved, err := saveConfigFiles(h.dataDir)
	if err != nil {
		return err
	}
	tmp := kept + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("keep configuration files: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("keep configuration files: %w", err)
	}
	if err := h.pg.own(tmp); err != nil {
		return err
	}
	for _, f := range saved {
		if err := h.pg.writeFile(filepath.Join(tmp, f.Name), f.Data, f.Mode); err != nil {
			return fmt.Errorf("keep configuration files: %w", err)
		}
	}
	if err := os.Rename(tmp, kept); err != nil {
		return fmt.Errorf("keep configuration files: %w", err)
	}
	return syncDir(filepath.Dir(kept))
}

// restoreKeptConfigFiles writes a kept set back into dir (the data directory,
// or a re-clone's copy) and removes it. Without a kept set it does nothing.
func (h *host) restoreKeptConfigFiles(dir string) error {
	kept := h.keptConfPath()
	saved, err := saveConfigFiles(kept)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore the kept configuration files: %w", err)
	}
	for _, f := range saved {
		if err := h.pg.writeFile(filepath.Join(dir, f.Name), f.Data, f.Mode); err != nil {
			return fmt.Errorf("restore configuration file: %w", err)
		}
	}
	// The primary's *.conf files that the node did not have (its postgresql.conf,
	// when the node's lives outside the data directory) must not stay: the next
	// run would take them for the node's own. An empty set is a data directory
	// that held no cluster: the copy's configuration is all there is.
	present, err := saveConfigFiles(dir)
	if err != nil {
		return err
	}
	for _, f := range present {
		if len(saved) > 0 && !slices.ContainsFunc(saved, func(s savedFile) bool { return s.Name == f.Name }) {
			if err := os.Remove(filepath.Join(dir, f.Name)); err != nil {
				return fmt.Errorf("remove the primary's %s: %w", f.Name, err)
			}
		}
	}
	h.logger.Info("put the node's own configuration files back", "into", dir, "files", len(saved))
	if err := os.RemoveAll(kept); err != nil {
		return fmt.Errorf("remove the kept configuration files: %w", err)
	}
	return syncDir(filepath.Dir(kept))
}

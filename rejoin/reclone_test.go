package rejoin

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The swap of a re-clone finishes from whatever point it was interrupted at,
// and never deletes the old data directory.
func TestSwapCloneResumes(t *testing.T) {
	for _, stage := range []string{"before the renames", "after moving the data directory aside", "after both renames"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			h := &host{dataDir: filepath.Join(dir, "data"), logger: slog.New(slog.DiscardHandler), pg: &programs{}}
			mkfile := func(path, text string) {
				t.Helper()
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			mkfile(filepath.Join(h.dataDir, "PG_VERSION"), "old")
			mkfile(filepath.Join(h.clonePath(), "PG_VERSION"), "new")
			mkfile(h.cloneMarker(), "done")
			switch stage {
			case "after moving the data directory aside":
				if err := os.Rename(h.dataDir, h.dataDir+".pgquorum-old-earlier"); err != nil {
					t.Fatal(err)
				}
			case "after both renames":
				if err := os.Rename(h.dataDir, h.dataDir+".pgquorum-old-earlier"); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(h.clonePath(), h.dataDir); err != nil {
					t.Fatal(err)
				}
			}
			if h.cloneState() != cloneComplete {
				t.Fatalf("clone state %v, want complete", h.cloneState())
			}
			aside, err := h.swapClone()
			if err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(filepath.Join(h.dataDir, "PG_VERSION")); string(data) != "new" {
				t.Fatalf("the data directory holds %q, want the copy", data)
			}
			if h.cloneState() != cloneNone {
				t.Fatalf("clone state %v after the swap, want none", h.cloneState())
			}
			olds, _ := filepath.Glob(h.dataDir + ".pgquorum-old-*")
			if len(olds) != 1 {
				t.Fatalf("old directories %v, want exactly one", olds)
			}
			if data, _ := os.ReadFile(filepath.Join(olds[0], "PG_VERSION")); string(data) != "old" {
				t.Fatalf("the old directory holds %q", data)
			}
			if stage == "before the renames" && (aside != olds[0] || !strings.Contains(aside, ".pgquorum-old-")) {
				t.Fatalf("aside = %q, want %q", aside, olds[0])
			}
		})
	}
	t.Run("a partial copy is partial", func(t *testing.T) {
		dir := t.TempDir()
		h := &host{dataDir: filepath.Join(dir, "data")}
		if err := os.MkdirAll(h.clonePath(), 0o700); err != nil {
			t.Fatal(err)
		}
		if h.cloneState() != clonePartial {
			t.Fatalf("clone state %v, want partial", h.cloneState())
		}
	})
}

// The node's own configuration files survive a pg_rewind that overwrote them
// and finished after the driver that kept them died.
func TestKeptConfigFilesSurviveTheDriver(t *testing.T) {
	dir := t.TempDir()
	h := &host{dataDir: filepath.Join(dir, "data"), logger: slog.New(slog.DiscardHandler), pg: &programs{}}
	if err := os.MkdirAll(h.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(h.dataDir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("postgresql.conf", "include 'pgquorum.conf'\n")
	write("pgquorum.conf", "port = 5432\n")
	if err := h.keepConfigFiles(); err != nil {
		t.Fatal(err)
	}
	if err := h.keepConfigFiles(); err == nil {
		t.Fatal("keeping twice must refuse: the kept set is the node's own, the data directory's may not be any more")
	}
	write("pgquorum.conf", "port = 5433\n") // pg_rewind copied the primary's
	write("primary-only.conf", "x = 1\n")   // and one the node never had

	// A new driver (a new host value) finds the kept set and puts it back.
	next := &host{dataDir: h.dataDir, logger: h.logger, pg: h.pg}
	if err := next.restoreKeptConfigFiles(next.dataDir); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(h.dataDir, "pgquorum.conf")); string(data) != "port = 5432\n" {
		t.Fatalf("pgquorum.conf = %q after the restore", data)
	}
	if fileExists(h.keptConfPath()) {
		t.Fatal("the kept set is still there after the restore")
	}
	if fileExists(filepath.Join(h.dataDir, "primary-only.conf")) {
		t.Fatal("a configuration file of the primary's that the node did not have is still there")
	}
	if err := next.restoreKeptConfigFiles(next.dataDir); err != nil {
		t.Fatalf("restore without a kept set: %v", err)
	}
}

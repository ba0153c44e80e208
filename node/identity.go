package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/pki"
)

// autoIDFile holds, in node.data_dir, the id a learner with node.id: auto
// drew at its first start.
const autoIDFile = "node-id"

// resolveAutoID gives a learner configured with node.id: auto its id: the one
// kept in data_dir, or, at its first start (an empty data_dir: a new pod of a
// Deployment with an emptyDir volume), one drawn at random from the block of
// ids of its learner certificate and written there before the Raft member
// starts. A kept id that the certificate no longer covers (the block changed)
// is dropped with its log: the learner starts afresh under a new id, and the
// leader removes the old one once it has not heard from it for
// learners.remove_after. cfg.Node.ID is set on return.
//
// Ids are drawn uniformly: with a block of B ids and n learners alive at once,
// two of them draw the same id with a probability of about n²/2B; give
// Deployments a block of at least a billion ids (configs/kubernetes).
func resolveAutoID(cfg *config.Config, creds *pki.Credentials, logger *slog.Logger) error {
	if !cfg.Node.AutoID {
		return nil
	}
	if creds == nil {
		return errors.New("node.id: auto needs peer_tls: the id is drawn from the learner certificate's block")
	}
	id, err := creds.Identity()
	if err != nil {
		return fmt.Errorf("node.id: auto: %w", err)
	}
	path := filepath.Join(cfg.Node.DataDir, autoIDFile)
	kept, err := readAutoID(path)
	switch {
	case err != nil:
		return err
	case kept != 0 && id.Covers(kept):
		cfg.Node.ID = kept
		return nil
	case kept != 0:
		logger.Warn("node.id: auto: the kept id is not in the certificate's block; starting afresh under a new id",
			"kept", kept, "certificate", id.String())
		if err := forgetAutoID(cfg.Node.DataDir); err != nil {
			return err
		}
	default:
		if _, err := os.Stat(consensus.StorageFile(cfg.Node.DataDir)); err == nil {
			return fmt.Errorf("node.id: auto: %s holds a Raft log but no %s: it belongs to a node with a fixed id; "+
				"use that id, or an empty data_dir", cfg.Node.DataDir, autoIDFile)
		}
	}
	drawn, err := drawID(id.FirstID, id.LastID)
	if err != nil {
		return fmt.Errorf("node.id: auto: %w", err)
	}
	if err := os.MkdirAll(cfg.Node.DataDir, 0o700); err != nil {
		return fmt.Errorf("node.id: auto: %w", err)
	}
	if err := pki.WriteFileAtomic(path, []byte(strconv.FormatUint(drawn, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("node.id: auto: %w", err)
	}
	logger.Info("node.id: auto: drew a new node id", "id", drawn, "block", id.IDs(), "file", path)
	cfg.Node.ID = drawn
	return nil
}

// readAutoID reads the kept id; 0 without one.
func readAutoID(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("node.id: auto: %w", err)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("node.id: auto: %s holds %q, not a node id: remove it (and the Raft log beside it) to draw a new one", path, strings.TrimSpace(string(data)))
	}
	return id, nil
}

// forgetAutoID drops a learner's kept id and its Raft log, so that its next
// start draws a new id: a learner's log is a copy of the voters', nothing is
// lost. Used when the kept id cannot serve any more (removed from the
// cluster, or outside the certificate's block).
func forgetAutoID(dataDir string) error {
	for _, path := range []string{consensus.StorageFile(dataDir), filepath.Join(dataDir, autoIDFile)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("node.id: auto: drop the old id: %w", err)
		}
	}
	return nil
}

// drawID draws an id uniformly from [first, last].
func drawID(first, last uint64) (uint64, error) {
	if first == 0 || last < first {
		return 0, fmt.Errorf("the certificate's block %d-%d holds no node id", first, last)
	}
	// first >= 1, so the size last-first+1 fits a uint64.
	n, err := rand.Int(rand.Reader, new(big.Int).SetUint64(last-first+1))
	if err != nil {
		return 0, err
	}
	return first + n.Uint64(), nil
}

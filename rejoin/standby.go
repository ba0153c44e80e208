package rejoin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgquorum/pgquorum/conninfo"
)

// configureStandby makes the data directory dir a standby: standby.signal, and
// in postgresql.auto.conf a primary_conninfo of replication (nil = empty, a frozen
// standby that streams from no one), without the default_transaction_read_only
// a switchover leaves on an old primary. standby.signal is written first: from
// then on the directory can only ever start as a standby.
func (h *host) configureStandby(dir string, replication conninfo.Params) error {
	if err := h.pg.writeFile(filepath.Join(dir, "standby.signal"), nil, 0o600); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, "recovery.signal")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove recovery.signal: %w", err)
	}
	autoConf := filepath.Join(dir, autoConfFile)
	old, err := os.ReadFile(autoConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", autoConf, err)
	}
	value := ""
	if replication != nil {
		value = replication.String()
	}
	return h.pg.writeFile(autoConf, []byte(standbyAutoConf(string(old), value)), 0o600)
}

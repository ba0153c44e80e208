package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/pki"
)

// expiryWarning is how long before a certificate expires the node warns.
const expiryWarning = 30 * 24 * time.Hour

// certificateCheck is how often the node looks whether its certificate files
// changed (cert-manager renewing them in a mounted Secret, say), and reloads
// them if so. SIGHUP reloads at once.
const certificateCheck = 30 * time.Second

// security is a node's TLS credentials (SPEC §3.4). Each is nil when not
// configured. Owner: the node; the credentials reload themselves atomically.
type security struct {
	peer  *pki.Credentials // peer_tls: mutual TLS between proxies
	admin *pki.Credentials // admin.tls: HTTPS and operators' certificates
}

// loadSecurity loads the credentials the configuration names and warns, loudly,
// about what security.insecure turns off.
func loadSecurity(cfg *config.Config, logger *slog.Logger) (security, error) {
	var sec security
	var err error
	if sec.peer, err = cfg.PeerCredentials(); err != nil {
		return security{}, err
	}
	if sec.admin, err = cfg.AdminCredentials(); err != nil {
		return security{}, err
	}
	if parts := cfg.InsecureParts(); len(parts) > 0 {
		logger.Warn("INSECURE: security.insecure is set: "+strings.Join(parts, " and ")+
			". Anyone who can reach this node's addresses can run the cluster; loopback only, never in production.",
			"listen.raft", cfg.Listen.Raft, "listen.admin", cfg.Listen.Admin)
	}
	sec.warnExpiry(logger)
	return sec, nil
}

// consensusTLS is the peer TLS for consensus.Config (a nil interface when
// there is none, never a typed nil).
func (sec security) consensusTLS() consensus.PeerTLS {
	if sec.peer == nil {
		return nil
	}
	return sec.peer
}

// adminServer sets the admin API's authentication and HTTPS.
func (sec security) adminServer(s *admin.Server, cfg *config.Config) {
	s.Token = cfg.Admin.Token
	s.Insecure = cfg.Security.Insecure
	if sec.admin != nil {
		s.Operators = sec.admin
		s.TLS = sec.admin.HTTPSServerConfig()
	}
}

// reload re-reads the certificate files (same paths). A file that fails to
// load, or a peer certificate that is not this node's, keeps the previous
// credentials.
func (sec security) reload(logger *slog.Logger) error {
	var errs []error
	if sec.peer != nil {
		if err := sec.peer.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("peer_tls: %w", err))
		}
	}
	if sec.admin != nil {
		if err := sec.admin.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("admin.tls: %w", err))
		}
	}
	sec.warnExpiry(logger)
	return errors.Join(errs...)
}

// watch reloads the credentials whenever their files change (checked every
// interval), until ctx ends.
func (sec security) watch(ctx context.Context, logger *slog.Logger, interval time.Duration) error {
	last := sec.fingerprint()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		now := sec.fingerprint()
		if now == last {
			continue
		}
		last = now
		if err := sec.reload(logger); err != nil {
			logger.Error("certificate files changed but did not load; the previous ones stay in use", "err", err)
			continue
		}
		logger.Info("certificate files changed: reloaded")
	}
}

// fingerprint sums up the size and modification time of every certificate
// file (through symbolic links, as Kubernetes mounts Secrets).
func (sec security) fingerprint() string {
	var b strings.Builder
	for _, c := range []*pki.Credentials{sec.peer, sec.admin} {
		if c == nil {
			continue
		}
		f := c.Files()
		for _, path := range []string{f.CA, f.Cert, f.Key} {
			if st, err := os.Stat(path); err == nil {
				fmt.Fprintf(&b, "%s:%d:%d;", path, st.Size(), st.ModTime().UnixNano())
			} else {
				fmt.Fprintf(&b, "%s:missing;", path)
			}
		}
	}
	return b.String()
}

func (sec security) warnExpiry(logger *slog.Logger) {
	for key, c := range map[string]*pki.Credentials{"peer_tls.cert": sec.peer, "admin.tls.cert": sec.admin} {
		if c == nil {
			continue
		}
		if left := time.Until(c.NotAfter()); left < expiryWarning {
			logger.Warn("certificate expires soon: replace the file and send SIGHUP", "key", key,
				"expires", c.NotAfter().Format(time.RFC3339), "left", left.Round(time.Hour).String())
		}
	}
}

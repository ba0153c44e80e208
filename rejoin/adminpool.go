package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/admin"
)

// This file talks to the cluster through the admin APIs of the listed pgquorum
// nodes: the first that answers is used until it stops answering. A view is
// trusted only from a node that knows a Raft leader: a proxy cut off from the
// others keeps answering with a state that may be stale.

// adminCallTimeout bounds one GET /cluster.
const adminCallTimeout = 5 * time.Second

// adminPool is used by one goroutine (the run or the agent loop).
type adminPool struct {
	clients   []*admin.Client
	current   int    // index of the client that answered last
	token     string // Options.Token
	tokenFile string // Options.TokenFile, read before every mutating call
}

func newAdminPool(opts Options) *adminPool {
	p := &adminPool{token: opts.Token, tokenFile: opts.TokenFile}
	for _, addr := range opts.Admin {
		if opts.AdminTLS != nil && !strings.Contains(addr, "://") {
			addr = "https://" + addr
		}
		c := admin.NewClient(addr, opts.Token)
		if opts.AdminTLS != nil {
			transport := http.DefaultTransport.(*http.Transport).Clone()
			transport.TLSClientConfig = opts.AdminTLS
			c.HTTP.Transport = transport
		}
		p.clients = append(p.clients, c)
	}
	return p
}

// cluster returns GET /cluster from the first node that answers with a known
// Raft leader, starting with the one that answered last. Without one, it
// returns the last view it got (trusted false) or an error wrapping ErrAdmin.
func (p *adminPool) cluster(ctx context.Context) (view admin.ClusterView, trusted bool, err error) {
	var errs []error
	var fallback *admin.ClusterView
	for i := range p.clients {
		idx := (p.current + i) % len(p.clients)
		c := p.clients[idx]
		cctx, cancel := context.WithTimeout(ctx, adminCallTimeout)
		v, err := c.Cluster(cctx)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if v.Raft.Leader == 0 {
			errs = append(errs, fmt.Errorf("%s knows no Raft leader (election in progress, or cut off from the other proxies)", c.BaseURL))
			if fallback == nil {
				fallback = &v
			}
			continue
		}
		p.current = idx
		return v, true, nil
	}
	if ctx.Err() != nil {
		return admin.ClusterView{}, false, fmt.Errorf("%w: %w", ErrAdmin, ctx.Err())
	}
	if fallback != nil {
		return *fallback, false, nil
	}
	return admin.ClusterView{}, false, fmt.Errorf("%w: %w", ErrAdmin, errors.Join(errs...))
}

// rejoin calls POST /rejoin/{node} (checkOnly: only the token and the node are
// checked, nothing changes) on the node that answered last, then the others
// when it cannot be reached.
func (p *adminPool) rejoin(ctx context.Context, node string, checkOnly bool) (admin.RejoinResult, error) {
	token, err := p.currentToken()
	if err != nil {
		return admin.RejoinResult{}, err
	}
	var errs []error
	for i := range p.clients {
		idx := (p.current + i) % len(p.clients)
		c := *p.clients[idx]
		c.Token = token
		res, err := c.Rejoin(ctx, node, admin.RejoinRequest{CheckOnly: checkOnly})
		var apiErr *admin.APIError
		if err == nil || errors.As(err, &apiErr) || ctx.Err() != nil {
			// An answer, even a refusal, is the cluster's word: do not ask another node.
			p.current = idx
			return res, err
		}
		errs = append(errs, err)
	}
	return admin.RejoinResult{}, errors.Join(errs...)
}

// currentToken is the token from TokenFile (read now), else Token.
func (p *adminPool) currentToken() (string, error) {
	if p.tokenFile == "" {
		return p.token, nil
	}
	data, err := os.ReadFile(p.tokenFile)
	if err != nil {
		return "", fmt.Errorf("%w: token file: %w", ErrAdmin, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line), nil
}

// isUnauthorized reports whether err is the admin API refusing the token.
func isUnauthorized(err error) bool {
	var apiErr *admin.APIError
	return errors.As(err, &apiErr) && (apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden)
}

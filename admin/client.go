package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/pki"
)

// Client calls a node's admin API; the pgquorum CLI uses it.
type Client struct {
	BaseURL string      // e.g. http://127.0.0.1:8008 or https://...
	Token   string      // bearer token for mutating calls; "" = none
	TLS     *tls.Config // what HTTP uses for https:// (ClientOptions.TLS); nil = the defaults
	HTTP    *http.Client
}

// ClientOptions say how to reach and authenticate to the admin API.
type ClientOptions struct {
	// Token is the operators' bearer token for mutating calls; "" = none.
	Token string
	// TLS, if set, is used for https:// URLs, and a base URL without a
	// scheme becomes https://. It holds the CA that verifies the API's
	// certificate and, optionally, the operator's client certificate (see
	// ClientCredentials).
	TLS *tls.Config
	// Timeout bounds one call; zero means 30s.
	Timeout time.Duration
}

// NewClient returns a client for the admin API at baseURL ("host:port" or a
// URL) that sends token on mutating calls.
func NewClient(baseURL, token string) *Client {
	return NewClientWithOptions(baseURL, ClientOptions{Token: token})
}

// NewClientWithOptions returns a client for the admin API at baseURL
// ("host:port" or a URL).
func NewClientWithOptions(baseURL string, o ClientOptions) *Client {
	if !strings.Contains(baseURL, "://") {
		scheme := "http://"
		if o.TLS != nil {
			scheme = "https://"
		}
		baseURL = scheme + baseURL
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	hc := &http.Client{Timeout: timeout}
	if o.TLS != nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.TLSClientConfig = o.TLS
		hc.Transport = transport
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: o.Token, TLS: o.TLS, HTTP: hc}
}

// ClientCredentials are an operator tool's ways to authenticate to the admin
// API, as given on its command line (pgquorum's --token, --token-file, --ca,
// --client-cert, --client-key).
type ClientCredentials struct {
	Token     string // the bearer token itself
	TokenFile string // or a file holding it (wins over Token)
	CAFile    string // verifies an HTTPS API's certificate; "" = the system's roots
	CertFile  string // an operator's client certificate (`pgquorum cert client`)
	KeyFile   string
}

// Options reads the files and returns the client options.
func (c ClientCredentials) Options() (ClientOptions, error) {
	o := ClientOptions{Token: c.Token}
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return ClientOptions{}, fmt.Errorf("token file: %w", err)
		}
		if o.Token = strings.TrimRight(string(b), "\r\n"); o.Token == "" {
			return ClientOptions{}, fmt.Errorf("token file %s is empty", c.TokenFile)
		}
	}
	if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
		cfg, err := pki.HTTPSClientConfig(c.CAFile, c.CertFile, c.KeyFile)
		if err != nil {
			return ClientOptions{}, fmt.Errorf("admin API TLS: %w", err)
		}
		o.TLS = cfg
	}
	return o, nil
}

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Cluster returns GET /cluster.
func (c *Client) Cluster(ctx context.Context) (ClusterView, error) {
	var v ClusterView
	return v, c.do(ctx, http.MethodGet, "/cluster", nil, &v)
}

// Members returns GET /members.
func (c *Client) Members(ctx context.Context) ([]MemberView, error) {
	var v []MemberView
	return v, c.do(ctx, http.MethodGet, "/members", nil, &v)
}

// AddMember calls POST /members.
func (c *Client) AddMember(ctx context.Context, req AddMemberRequest) ([]MemberView, error) {
	var v []MemberView
	return v, c.do(ctx, http.MethodPost, "/members", req, &v)
}

// RemoveMember calls DELETE /members/{id}.
func (c *Client) RemoveMember(ctx context.Context, id uint64) ([]MemberView, error) {
	var v []MemberView
	return v, c.do(ctx, http.MethodDelete, "/members/"+strconv.FormatUint(id, 10), nil, &v)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return fmt.Errorf("admin API %s: %w", c.BaseURL, err)
	}
	if body != nil || method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // the API takes nothing else on mutating calls
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin API at %s (is a pgquorum node running there? set --admin or PGQUORUM_ADMIN): %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e errorBody
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &APIError{Status: resp.StatusCode, Message: e.Error}
		}
		var ri RoutingInfo
		if json.Unmarshal(data, &ri) == nil && ri.Reason != "" {
			return &APIError{Status: resp.StatusCode, Message: ri.Reason}
		}
		return &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API %s %s: unexpected answer: %w", method, path, err)
	}
	return nil
}

// IsUnauthorized reports whether err is the API's 401 answer.
func IsUnauthorized(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

// History returns GET /history.
func (c *Client) History(ctx context.Context) ([]clusterstate.HistoryEntry, error) {
	var v []clusterstate.HistoryEntry
	return v, c.do(ctx, http.MethodGet, "/history", nil, &v)
}

// Switchover calls POST /switchover and returns the recorded outcome.
func (c *Client) Switchover(ctx context.Context, to string) (clusterstate.HistoryEntry, error) {
	var v clusterstate.HistoryEntry
	return v, c.do(ctx, http.MethodPost, "/switchover", SwitchoverRequest{To: to}, &v)
}

// Failover calls POST /failover and returns the recorded outcome.
func (c *Client) Failover(ctx context.Context, req FailoverRequestBody) (clusterstate.HistoryEntry, error) {
	var v clusterstate.HistoryEntry
	return v, c.do(ctx, http.MethodPost, "/failover", req, &v)
}

// SetPaused calls POST /pause or POST /resume.
func (c *Client) SetPaused(ctx context.Context, paused bool) error {
	path := "/resume"
	if paused {
		path = "/pause"
	}
	return c.do(ctx, http.MethodPost, path, nil, nil)
}

// Drain asks the node to drain its proxy (POST /drain).
func (c *Client) Drain(ctx context.Context) (DrainInfo, error) {
	var info DrainInfo
	err := c.do(ctx, http.MethodPost, "/drain", nil, &info)
	return info, err
}

package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults applied by Load when a key is absent.
const (
	DefaultHoldTimeout        = 30 * time.Second
	DefaultMaxHeld            = 10000
	DefaultReleaseConcurrency = 16
	DefaultHealthInterval     = 500 * time.Millisecond
	DefaultHealthTimeout      = time.Second
	DefaultMinFailover        = 60 * time.Second
	DefaultQueryDatabase      = "postgres"
)

// Load reads, checks and validates the configuration file at path, applies
// environment overrides (ApplyEnv), reads the secret files it names and checks
// the certificates. The error is a *Problems with every problem found, each
// naming its key (only a file that is not YAML at all fails with one error).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, p, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	p.File = path
	if err := ApplyEnv(cfg, os.LookupEnv); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	// A key whose value could not be read is reported once, not again as
	// missing or invalid.
	var checks Problems
	cfg.validate(&checks)
	cfg.readSecrets(&checks)
	p.addUnlessReported(checks.List)
	if len(p.List) == 0 {
		// Only a valid configuration says which certificate to expect.
		cfg.checkCredentials(p)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkCredentials loads the certificates the configuration names.
func (c *Config) checkCredentials(p *Problems) {
	_, err := c.PeerCredentials()
	p.AddErr(err)
	_, err = c.AdminCredentials()
	p.AddErr(err)
	c.checkBackendFiles(p)
}

// Parse decodes YAML into a Config with defaults filled in. Unknown keys and
// values of the wrong kind are an error (a *Problems naming every one with its
// key and line). Parse does not validate; call Validate.
func Parse(data []byte) (*Config, error) {
	cfg, p, err := parse(data)
	if err != nil {
		return nil, err
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parse decodes what it can and returns the problems of the rest; err is set
// only when data is not YAML at all.
func parse(data []byte) (*Config, *Problems, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, nil, errors.New("empty configuration")
	}
	cfg := &Config{}
	p := &Problems{}
	decoder{p: p}.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	cfg.ApplyDefaults()
	return cfg, p, nil
}

// ApplyDefaults fills in the defaults of absent keys, as Parse does (for a
// configuration built in code).
func (c *Config) ApplyDefaults() {
	if c.Hold.Timeout.Duration == 0 {
		c.Hold.Timeout.Duration = DefaultHoldTimeout
	}
	if c.Hold.MaxHeld == 0 {
		c.Hold.MaxHeld = DefaultMaxHeld
	}
	if c.Hold.ReleaseConcurrency == 0 {
		c.Hold.ReleaseConcurrency = DefaultReleaseConcurrency
	}
	if c.Health.Interval.Duration == 0 {
		c.Health.Interval.Duration = DefaultHealthInterval
	}
	if c.Health.Timeout.Duration == 0 {
		c.Health.Timeout.Duration = DefaultHealthTimeout
	}
	if c.Failover.MinInterval.Duration == 0 {
		c.Failover.MinInterval.Duration = DefaultMinFailover
	}
	if c.Auth.QueryDatabase == "" {
		c.Auth.QueryDatabase = DefaultQueryDatabase
	}
	if c.Backend.SSLMode == "" {
		c.Backend.SSLMode = "disable"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
}

// resolvePaths makes relative file paths relative to the config file's directory.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Node.DataDir)
	abs(&c.Auth.QueryPasswordFile)
	abs(&c.Auth.MockSecretFile)
	abs(&c.Backend.CA)
	abs(&c.Backend.Cert)
	abs(&c.Backend.Key)
	abs(&c.Admin.TokenFile)
	if c.TLS != nil {
		abs(&c.TLS.Cert)
		abs(&c.TLS.Key)
	}
	if c.PeerTLS != nil {
		abs(&c.PeerTLS.CA)
		abs(&c.PeerTLS.Cert)
		abs(&c.PeerTLS.Key)
	}
	if c.Admin.TLS != nil {
		abs(&c.Admin.TLS.Cert)
		abs(&c.Admin.TLS.Key)
		abs(&c.Admin.TLS.ClientCA)
	}
}

// MinTokenBytes is the shortest admin token accepted: a token is a password
// that every operator tool sends, so it must not be guessable.
const MinTokenBytes = 16

func (c *Config) readSecrets(p *Problems) {
	read := func(key, path string) string {
		if path == "" {
			return ""
		}
		b, err := os.ReadFile(path)
		if err != nil {
			p.Add(key, "%v", err)
			return ""
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			p.Add(key, "file %s is empty", path)
		}
		return s
	}
	c.Auth.QueryPassword = read("auth.query_password_file", c.Auth.QueryPasswordFile)
	c.Admin.Token = read("admin.token_file", c.Admin.TokenFile)
	c.Auth.MockSecret = read("auth.mock_secret_file", c.Auth.MockSecretFile)
	if n := len(c.Auth.MockSecret); n > 0 && n < MinMockSecretBytes {
		p.Add("auth.mock_secret_file", "the secret in %s has %d bytes; use at least %d random ones (`head -c 32 /dev/urandom | base64`)",
			c.Auth.MockSecretFile, n, MinMockSecretBytes)
	}
	if n := len(c.Admin.Token); n > 0 && n < MinTokenBytes {
		p.Add("admin.token_file", "the token in %s has %d bytes; use at least %d random ones (`head -c 32 /dev/urandom | base64`)",
			c.Admin.TokenFile, n, MinTokenBytes)
	}
}

// UnmarshalYAML reads a duration such as "500ms" or "30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 500ms or 30s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 500ms, 30s)", n.Line, n.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %q is negative", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

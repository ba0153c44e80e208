// Package conninfo reads and writes libpq connection strings — the
// keyword/value form (host=a port=5432 user='x y') and the URI form
// (postgresql://user:secret@host:5432/db?sslmode=disable) — and builds the
// primary_conninfo with which a standby follows a primary.
//
// It is pure: no I/O. Values of the secret keywords (SecretKeys) never leave
// the package in Redacted output, so callers can log connection strings safely
// with Redacted.
package conninfo

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"unicode"
)

// Param is one keyword of a connection string and its value.
type Param struct {
	Key   string
	Value string
}

// Params is a parsed connection string, keywords in the order written.
type Params []Param

// AddressingKeys say where to connect and under which name. A replication
// template never keeps them: whoever re-points a standby sets them.
var AddressingKeys = []string{"host", "hostaddr", "port", "application_name"}

// SecretKeys are keywords whose values are secrets: never logged.
var SecretKeys = []string{"password", "sslpassword"}

// Parse parses a libpq connection string in either form. Its errors never
// quote the input, which may hold a password.
func Parse(s string) (Params, error) {
	trimmed := strings.TrimSpace(s)
	if strings.HasPrefix(trimmed, "postgresql://") || strings.HasPrefix(trimmed, "postgres://") {
		return parseURI(trimmed)
	}
	return parseKeywords(trimmed)
}

// parseKeywords parses "keyword = value ..." as libpq does: a value is either
// single-quoted (with \' and \\ escapes) or runs up to the next whitespace (with
// backslash escapes).
func parseKeywords(s string) (Params, error) {
	var params Params
	r := []rune(s)
	i := 0
	skipSpace := func() {
		for i < len(r) && unicode.IsSpace(r[i]) {
			i++
		}
	}
	for {
		skipSpace()
		if i >= len(r) {
			return params, nil
		}
		start := i
		for i < len(r) && r[i] != '=' && !unicode.IsSpace(r[i]) {
			i++
		}
		key := string(r[start:i])
		skipSpace()
		if i >= len(r) || r[i] != '=' {
			return nil, fmt.Errorf("connection string: missing \"=\" after %q", key)
		}
		if key == "" {
			return nil, errors.New("connection string: empty keyword")
		}
		i++ // '='
		skipSpace()
		var value strings.Builder
		if i < len(r) && r[i] == '\'' {
			i++
			closed := false
			for i < len(r) && !closed {
				switch {
				case r[i] == '\\' && i+1 < len(r):
					value.WriteRune(r[i+1])
					i += 2
				case r[i] == '\'':
					closed = true
					i++
				default:
					value.WriteRune(r[i])
					i++
				}
			}
			if !closed {
				return nil, fmt.Errorf("connection string: unterminated quoted value of %q", key)
			}
		} else {
			for i < len(r) && !unicode.IsSpace(r[i]) {
				if r[i] == '\\' && i+1 < len(r) {
					i++
				}
				value.WriteRune(r[i])
				i++
			}
		}
		params = append(params, Param{Key: key, Value: value.String()})
	}
}

// parseURI parses postgresql://[user[:password]@][hosts][/dbname][?k=v&...].
// Host lists (h1:1,h2:2) become one host value and one port value, as libpq
// accepts them.
func parseURI(s string) (Params, error) {
	rest := s[strings.Index(s, "://")+3:]
	var query string
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		rest, query = rest[:q], rest[q+1:]
	}
	var params Params
	add := func(key, escaped string) error {
		v, err := url.PathUnescape(escaped)
		if err != nil {
			return fmt.Errorf("connection URI: bad %s", key)
		}
		params = append(params, Param{Key: key, Value: v})
		return nil
	}
	authority := rest
	if slash := strings.IndexByte(rest, '/'); slash >= 0 {
		authority = rest[:slash]
		if db := rest[slash+1:]; db != "" {
			if err := add("dbname", db); err != nil {
				return nil, err
			}
		}
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo := authority[:at]
		authority = authority[at+1:]
		user, password, hasPassword := strings.Cut(userinfo, ":")
		if user != "" {
			if err := add("user", user); err != nil {
				return nil, err
			}
		}
		if hasPassword {
			if err := add("password", password); err != nil {
				return nil, err
			}
		}
	}
	if authority != "" {
		var hosts, ports []string
		for _, hp := range strings.Split(authority, ",") {
			host, port := hp, ""
			if strings.HasPrefix(hp, "[") { // [ipv6]:port
				if end := strings.IndexByte(hp, ']'); end >= 0 {
					host = hp[1:end]
					port = strings.TrimPrefix(hp[end+1:], ":")
				}
			} else if c := strings.LastIndexByte(hp, ':'); c >= 0 {
				host, port = hp[:c], hp[c+1:]
			}
			hosts = append(hosts, host)
			ports = append(ports, port)
		}
		if err := add("host", strings.Join(hosts, ",")); err != nil {
			return nil, err
		}
		if strings.Join(ports, "") != "" {
			params = append(params, Param{Key: "port", Value: strings.Join(ports, ",")})
		}
	}
	if query != "" {
		values, err := url.ParseQuery(query)
		if err != nil {
			return nil, errors.New("connection URI: bad parameters")
		}
		for _, k := range slices.Sorted(maps.Keys(values)) {
			params = append(params, Param{Key: k, Value: values.Get(k)})
		}
	}
	return params, nil
}

// Get returns the value of key; the last occurrence wins, as in libpq.
func (p Params) Get(key string) (string, bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i].Key == key {
			return p[i].Value, true
		}
	}
	return "", false
}

// With returns a copy with key set to value: in place of its first occurrence
// (later ones dropped), or appended.
func (p Params) With(key, value string) Params {
	out := make(Params, 0, len(p)+1)
	set := false
	for _, q := range p {
		if q.Key != key {
			out = append(out, q)
		} else if !set {
			out = append(out, Param{Key: key, Value: value})
			set = true
		}
	}
	if !set {
		out = append(out, Param{Key: key, Value: value})
	}
	return out
}

// Without returns a copy without the given keywords.
func (p Params) Without(keys ...string) Params {
	out := make(Params, 0, len(p))
	for _, q := range p {
		if !slices.Contains(keys, q.Key) {
			out = append(out, q)
		}
	}
	return out
}

// String renders the keyword/value form with every value single-quoted.
func (p Params) String() string {
	var b strings.Builder
	for _, q := range p {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(q.Key)
		b.WriteString("='")
		b.WriteString(strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(q.Value))
		b.WriteByte('\'')
	}
	return b.String()
}

// Redacted renders the keyword/value form with the secrets masked, for logs.
func (p Params) Redacted() string {
	out := make(Params, len(p))
	for i, q := range p {
		out[i] = q
		if slices.Contains(SecretKeys, q.Key) {
			out[i].Value = "********"
		}
	}
	return out.String()
}

// Redact parses s and renders it with the secrets masked; an unparsable
// string is not shown at all.
func Redact(s string) string {
	p, err := Parse(s)
	if err != nil {
		return "(unparsable connection string)"
	}
	return p.Redacted()
}

// Standby returns the primary_conninfo with which the standby named
// applicationName follows the primary at host:port. Everything but the
// addressing keywords comes from template (user, password, sslmode, passfile,
// ...). A non-empty user overrides the template's, and then the template's
// password, which belonged to that other user, is dropped unless password is
// given too; a non-empty password overrides the template's.
func Standby(template Params, host, port, applicationName, user, password string) Params {
	params := template.Without(AddressingKeys...)
	if user != "" {
		if old, ok := params.Get("user"); !ok || old != user {
			params = params.Without("password")
		}
		params = params.With("user", user)
	}
	if password != "" {
		params = params.With("password", password)
	}
	out := Params{{Key: "host", Value: host}, {Key: "port", Value: port}}
	out = append(out, params...)
	return append(out, Param{Key: "application_name", Value: applicationName})
}

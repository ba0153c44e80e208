package rejoin

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
)

// This file reads and writes libpq connection strings: the keyword/value form
// (host=a port=5432 user='x y') and the URI form
// (postgresql://user:secret@host:5432/db?sslmode=disable). It is pure: no I/O.

// connParam is one keyword of a connection string and its value.
type connParam struct {
	Key   string
	Value string
}

// Keywords that say where to connect and under which name. A replication
// template never keeps them: rejoin sets them for the current primary.
var addressingKeys = []string{"host", "hostaddr", "port", "application_name"}

// Keywords whose values are secrets: never logged.
var secretKeys = []string{"password", "sslpassword"}

// parseConninfo parses a libpq connection string in either form.
func parseConninfo(s string) ([]connParam, error) {
	trimmed := strings.TrimSpace(s)
	if strings.HasPrefix(trimmed, "postgresql://") || strings.HasPrefix(trimmed, "postgres://") {
		return parseConninfoURI(trimmed)
	}
	return parseConninfoKeywords(trimmed)
}

// parseConninfoKeywords parses "keyword = value ..." as libpq does: a value is
// either single-quoted (with \' and \\ escapes) or runs up to the next
// whitespace (with backslash escapes).
func parseConninfoKeywords(s string) ([]connParam, error) {
	var params []connParam
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
		params = append(params, connParam{Key: key, Value: value.String()})
	}
}

// parseConninfoURI parses postgresql://[user[:password]@][hosts][/dbname][?k=v&...].
// Host lists (h1:1,h2:2) are kept as one host value and one port value, as libpq
// accepts them; rejoin drops both anyway.
func parseConninfoURI(s string) ([]connParam, error) {
	rest := s[strings.Index(s, "://")+3:]
	var query string
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		rest, query = rest[:q], rest[q+1:]
	}
	var params []connParam
	add := func(key, escaped string) error {
		v, err := url.PathUnescape(escaped)
		if err != nil {
			return fmt.Errorf("connection URI: bad %s: %w", key, err)
		}
		params = append(params, connParam{Key: key, Value: v})
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
			params = append(params, connParam{Key: "port", Value: strings.Join(ports, ",")})
		}
	}
	if query != "" {
		values, err := url.ParseQuery(query)
		if err != nil {
			return nil, fmt.Errorf("connection URI: bad parameters: %w", err)
		}
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			params = append(params, connParam{Key: k, Value: values.Get(k)})
		}
	}
	return params, nil
}

// formatConninfo writes params in the keyword/value form; values that need it are
// single-quoted with ' and \ escaped.
func formatConninfo(params []connParam) string {
	parts := make([]string, 0, len(params))
	for _, p := range params {
		parts = append(parts, p.Key+"="+quoteConnValue(p.Value))
	}
	return strings.Join(parts, " ")
}

func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\\'") {
		return v
	}
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", `\'`) + "'"
}

// getParam returns the value of key (the last one wins, as in libpq).
func getParam(params []connParam, key string) (string, bool) {
	for i := len(params) - 1; i >= 0; i-- {
		if params[i].Key == key {
			return params[i].Value, true
		}
	}
	return "", false
}

// setParam returns params with key set to value (replacing every earlier occurrence).
func setParam(params []connParam, key, value string) []connParam {
	out := withoutParams(params, key)
	return append(out, connParam{Key: key, Value: value})
}

// withoutParams returns a copy of params without the given keywords.
func withoutParams(params []connParam, keys ...string) []connParam {
	out := make([]connParam, 0, len(params))
	for _, p := range params {
		if !slices.Contains(keys, p.Key) {
			out = append(out, p)
		}
	}
	return out
}

// redactConninfo returns params as a string with secrets replaced, for logs and errors.
func redactConninfo(params []connParam) string {
	out := make([]connParam, len(params))
	for i, p := range params {
		out[i] = p
		if slices.Contains(secretKeys, p.Key) {
			out[i].Value = "********"
		}
	}
	return formatConninfo(out)
}

// replicationConninfo builds the primary_conninfo of a standby named node that
// streams from host:port. Everything but the addressing keywords comes from
// template (user, password, sslmode, passfile, ...); a non-empty user overrides
// the template's user, and then the template's password, which belonged to that
// other user, is dropped unless password is given too.
func replicationConninfo(template []connParam, host, port, node, user, password, sslmode string) []connParam {
	params := withoutParams(template, addressingKeys...)
	if user != "" {
		if old, ok := getParam(params, "user"); !ok || old != user {
			params = withoutParams(params, "password")
		}
		params = setParam(params, "user", user)
	}
	if password != "" {
		params = setParam(params, "password", password)
	}
	if _, ok := getParam(params, "sslmode"); !ok && sslmode != "" {
		params = append(params, connParam{Key: "sslmode", Value: sslmode})
	}
	head := []connParam{{Key: "host", Value: host}, {Key: "port", Value: port}}
	params = append(head, params...)
	return append(params, connParam{Key: "application_name", Value: node})
}

package coordinator

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"unicode"
)

// This file handles primary_conninfo values: libpq connection strings in the
// keyword/value form (host=a port=5432 user='x y') or the URI form
// (postgresql://user@host:port/db?sslmode=disable). It is pure: no I/O.

// conninfoParam is one keyword and its value.
type conninfoParam struct {
	Key   string
	Value string
}

// Keywords the coordinator sets itself for every standby; a template never keeps them.
var addressingKeys = []string{"host", "hostaddr", "port", "application_name"}

// Keywords whose values are secrets: never logged, never recorded in the Raft log.
var secretKeys = []string{"password", "sslpassword"}

// templateMarker introduces the conninfo template in a freeze step's Detail.
const templateMarker = "primary_conninfo template: "

// parseConninfo parses a libpq connection string in either form.
func parseConninfo(s string) ([]conninfoParam, error) {
	trimmed := strings.TrimSpace(s)
	if strings.HasPrefix(trimmed, "postgresql://") || strings.HasPrefix(trimmed, "postgres://") {
		return parseConninfoURI(trimmed)
	}
	return parseConninfoKeywords(trimmed)
}

// parseConninfoKeywords parses "keyword = value ..." as libpq does: values are
// either single-quoted (with \' and \\ escapes) or run up to the next whitespace
// (with backslash escapes).
func parseConninfoKeywords(s string) ([]conninfoParam, error) {
	var params []conninfoParam
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
			return nil, fmt.Errorf("missing \"=\" after %q in connection string", key)
		}
		if key == "" {
			return nil, errors.New("empty keyword in connection string")
		}
		i++ // '='
		skipSpace()
		var value strings.Builder
		if i < len(r) && r[i] == '\'' {
			i++
			closed := false
			for i < len(r) {
				switch {
				case r[i] == '\\' && i+1 < len(r):
					value.WriteRune(r[i+1])
					i += 2
				case r[i] == '\'':
					i++
					closed = true
				default:
					value.WriteRune(r[i])
					i++
				}
				if closed {
					break
				}
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted value of %q in connection string", key)
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
		params = append(params, conninfoParam{Key: key, Value: value.String()})
	}
}

// parseConninfoURI parses the URI form into keyword/value pairs.
func parseConninfoURI(s string) ([]conninfoParam, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the input, which may hold a password.
		return nil, errors.New("cannot parse connection URI")
	}
	var params []conninfoParam
	if u.User != nil {
		if name := u.User.Username(); name != "" {
			params = append(params, conninfoParam{Key: "user", Value: name})
		}
		if pw, ok := u.User.Password(); ok {
			params = append(params, conninfoParam{Key: "password", Value: pw})
		}
	}
	if host := u.Hostname(); host != "" {
		params = append(params, conninfoParam{Key: "host", Value: host})
	}
	if port := u.Port(); port != "" {
		params = append(params, conninfoParam{Key: "port", Value: port})
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		params = append(params, conninfoParam{Key: "dbname", Value: db})
	}
	query := u.Query()
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		params = append(params, conninfoParam{Key: k, Value: query.Get(k)})
	}
	return params, nil
}

// conninfoTemplate keeps what a re-pointed standby inherits from a primary_conninfo:
// everything except the addressing keywords.
func conninfoTemplate(params []conninfoParam) []conninfoParam {
	var out []conninfoParam
	for _, p := range params {
		if !slices.Contains(addressingKeys, p.Key) {
			out = append(out, p)
		}
	}
	return out
}

// withoutSecrets drops the secret keywords.
func withoutSecrets(params []conninfoParam) []conninfoParam {
	var out []conninfoParam
	for _, p := range params {
		if !slices.Contains(secretKeys, p.Key) {
			out = append(out, p)
		}
	}
	return out
}

// setParam returns params with key set to value (replacing an existing one).
func setParam(params []conninfoParam, key, value string) []conninfoParam {
	out := slices.Clone(params)
	for i, p := range out {
		if p.Key == key {
			out[i].Value = value
			return out
		}
	}
	return append(out, conninfoParam{Key: key, Value: value})
}

// renderConninfo renders params in the keyword/value form, every value quoted.
func renderConninfo(params []conninfoParam) string {
	var b strings.Builder
	for _, p := range params {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.Key)
		b.WriteString("='")
		b.WriteString(strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p.Value))
		b.WriteByte('\'')
	}
	return b.String()
}

// redactConninfo renders a connection string for logs: secrets removed. An
// unparsable one is not shown at all.
func redactConninfo(s string) string {
	params, err := parseConninfo(s)
	if err != nil {
		return "(unparsable connection string)"
	}
	return renderConninfo(withoutSecrets(params))
}

// standbyConninfo builds the primary_conninfo of standby name following the
// primary at address (host:port, port 5432 when absent), inheriting template.
// user and password, when not empty, override the template's.
func standbyConninfo(template []conninfoParam, address, name, user, password string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, "5432"
	}
	params := []conninfoParam{{Key: "host", Value: host}, {Key: "port", Value: port}}
	params = append(params, conninfoTemplate(template)...)
	if user != "" {
		params = setParam(params, "user", user)
	}
	if password != "" {
		params = setParam(params, "password", password)
	}
	params = append(params, conninfoParam{Key: "application_name", Value: name})
	return renderConninfo(params)
}

// templateDetail renders the part of a freeze step's Detail that lets a new leader
// rebuild primary_conninfo: the template without secrets.
func templateDetail(template []conninfoParam) string {
	return templateMarker + renderConninfo(withoutSecrets(conninfoTemplate(template)))
}

// templateFromDetail extracts the template templateDetail wrote; false if detail
// has none.
func templateFromDetail(detail string) ([]conninfoParam, bool) {
	i := strings.LastIndex(detail, templateMarker)
	if i < 0 {
		return nil, false
	}
	params, err := parseConninfoKeywords(detail[i+len(templateMarker):])
	if err != nil {
		return nil, false
	}
	return conninfoTemplate(withoutSecrets(params)), true
}

package rejoin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// This file reads PostgreSQL's configuration files the way the server does
// (assignments, quoting, include directives; the last assignment wins and
// postgresql.auto.conf comes last) and rewrites postgresql.auto.conf for a
// standby. The parsing and rewriting are pure; readSettings does the file I/O.

// confLine is one line of a configuration file that assigns a setting or is an
// include directive (Name is then include, include_if_exists or include_dir).
type confLine struct {
	Name  string // lower case
	Value string // unquoted
	Line  int    // 1-based
}

// parseConf parses the text of one configuration file.
func parseConf(text string) ([]confLine, error) {
	var lines []confLine
	for i, raw := range strings.Split(text, "\n") {
		name, value, ok, err := parseConfLine(raw)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if ok {
			lines = append(lines, confLine{Name: name, Value: value, Line: i + 1})
		}
	}
	return lines, nil
}

// parseConfLine parses "name [=] value [# comment]". ok is false for blank and
// comment lines.
func parseConfLine(raw string) (name, value string, ok bool, err error) {
	s := strings.TrimSpace(raw)
	if s == "" || s[0] == '#' {
		return "", "", false, nil
	}
	end := 0
	for end < len(s) && isNameChar(s[end]) {
		end++
	}
	if end == 0 {
		return "", "", false, fmt.Errorf("expected a setting name in %q", raw)
	}
	name = strings.ToLower(s[:end])
	rest := strings.TrimLeft(s[end:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	if strings.HasPrefix(rest, "'") {
		value, rest, err = unquoteConfValue(rest)
		if err != nil {
			return "", "", false, fmt.Errorf("setting %s: %w", name, err)
		}
	} else {
		stop := strings.IndexAny(rest, " \t#")
		if stop < 0 {
			stop = len(rest)
		}
		value, rest = rest[:stop], rest[stop:]
	}
	rest = strings.TrimSpace(rest)
	if rest != "" && rest[0] != '#' {
		return "", "", false, fmt.Errorf("setting %s: unexpected %q after the value", name, rest)
	}
	if value == "" && !strings.Contains(s, "'") {
		return "", "", false, fmt.Errorf("setting %s has no value", name)
	}
	return name, value, true, nil
}

func isNameChar(c byte) bool {
	return c == '_' || c == '.' || c == '$' || c == '-' ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// unquoteConfValue reads a quoted value at the start of s: ” is a quote, and
// backslash escapes are \b \f \n \r \t, octal \ooo, and \x for any other x.
func unquoteConfValue(s string) (value, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' && i+1 < len(s) && s[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\'':
			return b.String(), s[i+1:], nil
		case c == '\\' && i+1 < len(s):
			i++
			switch e := s[i]; e {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				if e >= '0' && e <= '7' {
					v, n := 0, 0
					for n < 3 && i < len(s) && s[i] >= '0' && s[i] <= '7' {
						v = v*8 + int(s[i]-'0')
						i++
						n++
					}
					i--
					b.WriteByte(byte(v))
				} else {
					b.WriteByte(e)
				}
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated quoted value")
}

// quoteConfValue quotes a value for a configuration file as ALTER SYSTEM does.
func quoteConfValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// maxIncludeDepth matches PostgreSQL's limit on nested include directives.
const maxIncludeDepth = 10

// readSettings returns the settings of a data directory as the server would
// read them at start: the main configuration file (configFile, "" =
// dataDir/postgresql.conf) with its includes, then dataDir/postgresql.auto.conf.
// Names are lower case; the last assignment wins.
func readSettings(configFile, dataDir string) (map[string]string, error) {
	settings := map[string]string{}
	main := configFile
	if main == "" {
		main = filepath.Join(dataDir, "postgresql.conf")
	}
	if err := readConfFile(main, settings, 0, true); err != nil {
		return nil, err
	}
	if err := readConfFile(filepath.Join(dataDir, autoConfFile), settings, 0, false); err != nil {
		return nil, err
	}
	return settings, nil
}

func readConfFile(path string, settings map[string]string, depth int, required bool) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("%s: includes nested deeper than %d (a loop?)", path, maxIncludeDepth)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	lines, err := parseConf(string(data))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	for _, l := range lines {
		switch l.Name {
		case "include":
			err = readConfFile(resolve(l.Value), settings, depth+1, true)
		case "include_if_exists":
			err = readConfFile(resolve(l.Value), settings, depth+1, false)
		case "include_dir":
			err = readConfDir(resolve(l.Value), settings, depth+1)
		default:
			settings[l.Name] = l.Value
		}
		if err != nil {
			return fmt.Errorf("%s line %d: %w", path, l.Line, err)
		}
	}
	return nil
}

// readConfDir reads the *.conf files of an include_dir in name order, skipping
// hidden files, as PostgreSQL does.
func readConfDir(dir string, settings map[string]string, depth int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("include_dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if err := readConfFile(filepath.Join(dir, n), settings, depth, true); err != nil {
			return err
		}
	}
	return nil
}

// autoConfFile is the file ALTER SYSTEM writes; it overrides every other file.
const autoConfFile = "postgresql.auto.conf"

// autoConfHeader is what PostgreSQL writes at the top of postgresql.auto.conf.
const autoConfHeader = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"

// Settings a standby must not inherit from its days as a primary: its old
// upstream, and the read-only fence a switchover puts on the old primary.
var droppedStandbySettings = []string{"primary_conninfo", "default_transaction_read_only"}

// standbyAutoConf returns the content of postgresql.auto.conf for a standby
// that streams with conninfo: the old content without primary_conninfo and
// default_transaction_read_only, every other line kept as it was, and
// primary_conninfo appended. Lines that do not parse are kept too (the server
// would report them, not us).
func standbyAutoConf(old, conninfo string) string {
	var b strings.Builder
	if strings.TrimSpace(old) == "" {
		b.WriteString(autoConfHeader)
	}
	for _, raw := range strings.SplitAfter(old, "\n") {
		if raw == "" {
			continue
		}
		if name, _, ok, err := parseConfLine(raw); err == nil && ok && slices.Contains(droppedStandbySettings, name) {
			continue
		}
		b.WriteString(raw)
		if !strings.HasSuffix(raw, "\n") {
			b.WriteByte('\n')
		}
	}
	b.WriteString("primary_conninfo = " + quoteConfValue(conninfo) + "\n")
	return b.String()
}

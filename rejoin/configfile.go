package rejoin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// This file finds the server's main configuration file. Upstream PostgreSQL
// keeps it in the data directory; Debian and Ubuntu keep it in
// /etc/postgresql/<version>/<cluster>/ with data_directory pointing at
// /var/lib/postgresql/<version>/<cluster>. pg_rewind and pg_basebackup only
// touch the data directory, so a configuration outside it survives them; what
// matters is that the server we start, and pg_rewind's single-user recovery,
// read the right file.

// debianConfigRoot is where Debian's postgresql-common keeps clusters' configuration.
var debianConfigRoot = "/etc/postgresql"

// findConfigFile returns the main configuration file of dataDir and whether it
// lives outside dataDir: explicit when given (it must exist), else
// dataDir/postgresql.conf, else the one Debian file under debianConfigRoot
// whose data_directory is dataDir. The error says what to pass when none is found.
func findConfigFile(explicit, dataDir string) (path string, outside bool, err error) {
	if explicit != "" {
		abs, err := filepath.Abs(explicit)
		if err != nil {
			return "", false, fmt.Errorf("configuration file %s: %w", explicit, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", false, fmt.Errorf("configuration file: %w", err)
		}
		return abs, !sameDir(filepath.Dir(abs), dataDir), nil
	}
	inside := filepath.Join(dataDir, "postgresql.conf")
	if _, err := os.Stat(inside); err == nil {
		return inside, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("configuration file: %w", err)
	}
	candidates, _ := filepath.Glob(filepath.Join(debianConfigRoot, "*", "*", "postgresql.conf"))
	var found []string
	for _, c := range candidates {
		settings := map[string]string{}
		if err := readConfFile(c, settings, 0, true); err != nil {
			continue
		}
		if dir := settings["data_directory"]; dir != "" && sameDir(dir, dataDir) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		return found[0], true, nil
	case 0:
		return "", false, fmt.Errorf("no postgresql.conf in %s and no %s/*/*/postgresql.conf names it as data_directory: "+
			"pass --config-file with the server's main configuration file", dataDir, debianConfigRoot)
	default:
		return "", false, fmt.Errorf("several configuration files name %s as data_directory (%s): pass --config-file",
			dataDir, strings.Join(found, ", "))
	}
}

// configFileOption is the server option that points it at an outside
// configuration file, for pg_ctl -o. pg_ctl hands the option to a shell, so
// the path is single-quoted; a path with a quote is refused.
func configFileOption(path string) (string, error) {
	if strings.ContainsAny(path, "'\n") {
		return "", fmt.Errorf("configuration file path %q contains a quote or a line break; move it or link it from a plain path", path)
	}
	return "-c config_file='" + path + "'", nil
}

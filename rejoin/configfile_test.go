package rejoin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindConfigFile(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc", "postgresql")
	saved := debianConfigRoot
	debianConfigRoot = etc
	t.Cleanup(func() { debianConfigRoot = saved })
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	upstream := filepath.Join(root, "upstream")
	write(filepath.Join(upstream, "postgresql.conf"), "port = 5432\n")
	if path, outside, err := findConfigFile("", upstream); err != nil || outside || path != filepath.Join(upstream, "postgresql.conf") {
		t.Fatalf("upstream layout: %q %v %v", path, outside, err)
	}

	debian := filepath.Join(root, "var", "lib", "postgresql", "15", "main")
	if err := os.MkdirAll(debian, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := findConfigFile("", debian); err == nil || !strings.Contains(err.Error(), "--config-file") {
		t.Fatalf("no configuration anywhere: got %v", err)
	}
	conf := filepath.Join(etc, "15", "main", "postgresql.conf")
	write(conf, "data_directory = '"+debian+"'\nport = 5433\ninclude_dir = 'conf.d'\n")
	write(filepath.Join(etc, "15", "main", "conf.d", "pgquorum.conf"), "port = 5434\n")
	write(filepath.Join(etc, "15", "other", "postgresql.conf"), "data_directory = '/var/lib/postgresql/15/other'\n")
	path, outside, err := findConfigFile("", debian)
	if err != nil || !outside || path != conf {
		t.Fatalf("Debian layout: %q %v %v; want %s outside", path, outside, err, conf)
	}
	write(filepath.Join(debian, autoConfFile), "primary_conninfo = 'host=x'\n")
	settings, err := readSettings(path, debian)
	if err != nil || settings["port"] != "5434" || settings["primary_conninfo"] != "host=x" {
		t.Fatalf("settings of the Debian layout: %v, %v", settings, err)
	}
	if path, outside, err := findConfigFile(conf, debian); err != nil || !outside || path != conf {
		t.Fatalf("explicit: %q %v %v", path, outside, err)
	}
	if _, _, err := findConfigFile(filepath.Join(root, "missing.conf"), debian); err == nil {
		t.Fatal("a missing explicit file: want an error")
	}

	if opt, err := configFileOption(conf); err != nil || opt != "-c config_file='"+conf+"'" {
		t.Fatalf("configFileOption = %q, %v", opt, err)
	}
	if _, err := configFileOption("/etc/it's/postgresql.conf"); err == nil {
		t.Fatal("a path with a quote: want an error")
	}
}

package rejoin

import (
	"reflect"
	"testing"
)

func TestParseConninfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []connParam
	}{
		{"keywords", "host=127.0.0.1 port=5432 user=replicator application_name=pg2 sslmode=disable",
			[]connParam{{"host", "127.0.0.1"}, {"port", "5432"}, {"user", "replicator"}, {"application_name", "pg2"}, {"sslmode", "disable"}}},
		{"quoted values and spaces around =", `user = 'a b' password='it\'s' passfile='C:\\x'`,
			[]connParam{{"user", "a b"}, {"password", "it's"}, {"passfile", `C:\x`}}},
		{"empty quoted value", "password='' user=x", []connParam{{"password", ""}, {"user", "x"}}},
		{"empty string", "", nil},
		{"uri", "postgresql://repl:s%40cret@db1:5433/postgres?sslmode=require&application_name=pg1",
			[]connParam{{"dbname", "postgres"}, {"user", "repl"}, {"password", "s@cret"}, {"host", "db1"}, {"port", "5433"},
				{"application_name", "pg1"}, {"sslmode", "require"}}},
		{"uri with host list", "postgres://u@h1:1,h2:2",
			[]connParam{{"user", "u"}, {"host", "h1,h2"}, {"port", "1,2"}}},
		{"uri ipv6", "postgresql://[::1]:5432", []connParam{{"host", "::1"}, {"port", "5432"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConninfo(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseConninfo(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseConninfoErrors(t *testing.T) {
	for _, in := range []string{"host", "=x", "user='unterminated", "postgresql://u@h/db?%zz=1"} {
		if _, err := parseConninfo(in); err == nil {
			t.Errorf("parseConninfo(%q): want an error", in)
		}
	}
}

func TestFormatConninfoRoundTrip(t *testing.T) {
	params := []connParam{{"host", "127.0.0.1"}, {"user", "a b"}, {"password", `it's \ odd`}, {"options", ""}}
	s := formatConninfo(params)
	back, err := parseConninfo(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, params) {
		t.Fatalf("round trip of %q: got %v, want %v", s, back, params)
	}
}

func TestReplicationConninfo(t *testing.T) {
	template := []connParam{{"host", "old"}, {"port", "1"}, {"user", "replicator"}, {"password", "pw"},
		{"application_name", "walreceiver"}, {"sslmode", "require"}, {"keepalives", "1"}}
	tests := []struct {
		name                    string
		template                []connParam
		user, password, sslmode string
		want                    string
	}{
		{"template kept, addressing replaced", template, "", "", "",
			"host=10.0.0.2 port=5433 user=replicator password=pw sslmode=require keepalives=1 application_name=pg1"},
		{"other user drops the template's password", template, "repl2", "", "",
			"host=10.0.0.2 port=5433 sslmode=require keepalives=1 user=repl2 application_name=pg1"},
		{"same user keeps it", template, "replicator", "", "",
			"host=10.0.0.2 port=5433 password=pw sslmode=require keepalives=1 user=replicator application_name=pg1"},
		{"user and password given", nil, "r", "secret", "disable",
			"host=10.0.0.2 port=5433 user=r password=secret sslmode=disable application_name=pg1"},
		{"sslmode option does not override the template", template, "", "", "disable",
			"host=10.0.0.2 port=5433 user=replicator password=pw sslmode=require keepalives=1 application_name=pg1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := formatConninfo(replicationConninfo(tt.template, "10.0.0.2", "5433", "pg1", tt.user, tt.password, tt.sslmode))
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestRedactConninfo(t *testing.T) {
	got := redactConninfo([]connParam{{"user", "u"}, {"password", "secret"}, {"sslpassword", "x"}})
	if got != "user=u password=******** sslpassword=********" {
		t.Fatalf("redactConninfo = %q", got)
	}
}

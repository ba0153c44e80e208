package conninfo

import (
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Params
	}{
		{"keywords", "host=127.0.0.1 port=5432 user=replicator application_name=pg2 sslmode=disable",
			Params{{"host", "127.0.0.1"}, {"port", "5432"}, {"user", "replicator"}, {"application_name", "pg2"}, {"sslmode", "disable"}}},
		{"quoted values, escapes and spaces around =", `  user = 'a b' password='it\'s \\ secret'   host=x\ y passfile='C:\\x'`,
			Params{{"user", "a b"}, {"password", `it's \ secret`}, {"host", "x y"}, {"passfile", `C:\x`}}},
		{"empty quoted value", "password='' user=x", Params{{"password", ""}, {"user", "x"}}},
		{"empty string", "", nil},
		{"uri", "postgresql://repl:s%40cret@db1:5433/postgres?sslmode=require&application_name=pg1",
			Params{{"dbname", "postgres"}, {"user", "repl"}, {"password", "s@cret"}, {"host", "db1"}, {"port", "5433"},
				{"application_name", "pg1"}, {"sslmode", "require"}}},
		{"uri with host list", "postgres://u@h1:1,h2:2", Params{{"user", "u"}, {"host", "h1,h2"}, {"port", "1,2"}}},
		{"uri ipv6", "postgresql://[::1]:5432", Params{{"host", "::1"}, {"port", "5432"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseErrorsNeverQuoteSecrets(t *testing.T) {
	for _, in := range []string{"host", "=x", "user='unterminated password=topsecret", "postgresql://u:topsecret@h/db?%zz=1"} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q): want an error", in)
			continue
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Parse error quotes a secret: %v", err)
		}
	}
}

func TestStringRoundTripsAndLibpqAcceptsIt(t *testing.T) {
	params := Params{{"host", "127.0.0.1"}, {"port", "5433"}, {"user", "a b"}, {"password", `it's \ odd`}, {"options", ""}}
	s := params.String()
	back, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, params) {
		t.Fatalf("round trip of %q: got %v, want %v", s, back, params)
	}
	cfg, err := pgconn.ParseConfig(s)
	if err != nil {
		t.Fatalf("pgconn rejects %s: %v", s, err)
	}
	if cfg.Host != "127.0.0.1" || cfg.Port != 5433 || cfg.User != "a b" || cfg.Password != `it's \ odd` {
		t.Fatalf("pgconn reads %+v", cfg)
	}
}

func TestWithAndWithout(t *testing.T) {
	p := Params{{"user", "a"}, {"sslmode", "require"}, {"user", "b"}}
	if got := p.With("user", "c"); !reflect.DeepEqual(got, Params{{"user", "c"}, {"sslmode", "require"}}) {
		t.Errorf("With replaces in place and drops duplicates: %v", got)
	}
	if got := p.With("dbname", "x"); got[len(got)-1] != (Param{"dbname", "x"}) || len(p) != 3 {
		t.Errorf("With appends a new keyword without touching the original: %v", got)
	}
	if v, _ := p.Get("user"); v != "b" {
		t.Errorf("Get: the last occurrence wins, got %q", v)
	}
	if got := p.Without("user"); !reflect.DeepEqual(got, Params{{"sslmode", "require"}}) {
		t.Errorf("Without: %v", got)
	}
}

func TestStandby(t *testing.T) {
	template := Params{{"host", "old"}, {"port", "1"}, {"user", "replicator"}, {"password", "pw"},
		{"application_name", "walreceiver"}, {"sslmode", "require"}, {"keepalives", "1"}}
	tests := []struct {
		name           string
		template       Params
		user, password string
		want           string
	}{
		{"template kept, addressing replaced", template, "", "",
			"host='10.0.0.2' port='5433' user='replicator' password='pw' sslmode='require' keepalives='1' application_name='pg1'"},
		{"another user drops the template's password", template, "repl2", "",
			"host='10.0.0.2' port='5433' user='repl2' sslmode='require' keepalives='1' application_name='pg1'"},
		{"the same user keeps it", template, "replicator", "",
			"host='10.0.0.2' port='5433' user='replicator' password='pw' sslmode='require' keepalives='1' application_name='pg1'"},
		{"user and password given", nil, "r", "secret",
			"host='10.0.0.2' port='5433' user='r' password='secret' application_name='pg1'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Standby(tt.template, "10.0.0.2", "5433", "pg1", tt.user, tt.password).String(); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	got := Params{{"user", "u"}, {"password", "secret"}, {"sslpassword", "x"}}.Redacted()
	if got != "user='u' password='********' sslpassword='********'" {
		t.Fatalf("Redacted = %q", got)
	}
	if got := Redact("user='unterminated password=secret"); strings.Contains(got, "secret") {
		t.Fatalf("Redact of an unparsable string leaks: %q", got)
	}
}

func TestWithTLSPolicyIsNeverWeaker(t *testing.T) {
	policy := Params{{Key: "sslmode", Value: "verify-full"}, {Key: "sslrootcert", Value: "/etc/pg/ca.pem"}}
	tests := []struct {
		name, template, policy, want string
	}{
		{"plaintext template gets the policy", "user=rep sslmode=disable", policy.String(),
			"user='rep' sslmode='verify-full' sslrootcert='/etc/pg/ca.pem'"},
		{"libpq default (prefer) gets the policy", "user=rep", policy.String(),
			"user='rep' sslmode='verify-full' sslrootcert='/etc/pg/ca.pem'"},
		{"a stronger template stays, with its own root", "user=rep sslmode=verify-full sslrootcert=/own.pem", "sslmode=require",
			"user='rep' sslmode='verify-full' sslrootcert='/own.pem'"},
		{"the template's root wins", "sslmode=require sslrootcert=/own.pem", policy.String(),
			"sslmode='verify-full' sslrootcert='/own.pem'"},
		{"no root in the policy", "user=rep", "sslmode=require", "user='rep' sslmode='require'"},
		{"empty policy changes nothing", "user=rep sslmode=disable", "", "user='rep' sslmode='disable'"},
		{"unknown sslmode is replaced", "sslmode=bogus", "sslmode=require", "sslmode='require'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			template, err := Parse(tt.template)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			if got := WithTLSPolicy(template, p).String(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

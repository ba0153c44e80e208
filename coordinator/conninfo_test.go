package coordinator

import (
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestParseConninfo(t *testing.T) {
	tests := []struct {
		in   string
		want []conninfoParam
	}{
		{"host=127.0.0.1 port=5433 user=replicator application_name=pg2 sslmode=disable", []conninfoParam{
			{"host", "127.0.0.1"}, {"port", "5433"}, {"user", "replicator"}, {"application_name", "pg2"}, {"sslmode", "disable"}}},
		{`  user = 'a b' password='it\'s \\ secret'   host=x\ y `, []conninfoParam{
			{"user", "a b"}, {"password", `it's \ secret`}, {"host", "x y"}}},
		{"user='' dbname=replication", []conninfoParam{{"user", ""}, {"dbname", "replication"}}},
		{"postgresql://rep:pw@db1:5432/postgres?sslmode=require&application_name=pg2", []conninfoParam{
			{"user", "rep"}, {"password", "pw"}, {"host", "db1"}, {"port", "5432"}, {"dbname", "postgres"},
			{"application_name", "pg2"}, {"sslmode", "require"}}},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := parseConninfo(tt.in)
		if err != nil {
			t.Errorf("parseConninfo(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parseConninfo(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"host", "host='unterminated", "=x"} {
		if _, err := parseConninfo(bad); err == nil {
			t.Errorf("parseConninfo(%q) succeeded, want an error", bad)
		}
	}
}

func TestStandbyConninfoInheritsTemplateAndLibpqAcceptsIt(t *testing.T) {
	template, err := parseConninfo(`host=old port=1 user=replicator password='p w\'' application_name=pg9 sslmode=disable`)
	if err != nil {
		t.Fatal(err)
	}
	got := standbyConninfo(template, "127.0.0.1:5433", "pg3", "", "")
	want := `host='127.0.0.1' port='5433' user='replicator' password='p w\'' sslmode='disable' application_name='pg3'`
	if got != want {
		t.Fatalf("standbyConninfo = %s\nwant              %s", got, want)
	}
	cfg, err := pgconn.ParseConfig(got)
	if err != nil {
		t.Fatalf("libpq syntax rejected by pgconn: %v", err)
	}
	if cfg.Host != "127.0.0.1" || cfg.Port != 5433 || cfg.User != "replicator" || cfg.Password != "p w'" ||
		cfg.RuntimeParams["application_name"] != "pg3" {
		t.Errorf("pgconn reads %+v", cfg)
	}
	overridden := standbyConninfo(template, "db2", "pg3", "other", "pw2")
	if !strings.Contains(overridden, "host='db2' port='5432' user='other' password='pw2'") {
		t.Errorf("overrides not applied: %s", overridden)
	}
}

func TestTemplateDetailNeverHoldsSecretsAndRoundTrips(t *testing.T) {
	template, _ := parseConninfo("host=h port=1 user=rep password=topsecret sslpassword=alsosecret sslmode=verify-full application_name=x")
	detail := "frozen: pg2, pg3; " + templateDetail(template)
	if strings.Contains(detail, "secret") {
		t.Fatalf("detail leaks a secret: %s", detail)
	}
	got, ok := templateFromDetail(detail)
	if !ok {
		t.Fatalf("no template found in %q", detail)
	}
	want := []conninfoParam{{"user", "rep"}, {"sslmode", "verify-full"}}
	if !slices.Equal(got, want) {
		t.Errorf("template from detail = %q, want %q", got, want)
	}
	if _, ok := templateFromDetail("frozen: pg2"); ok {
		t.Error("found a template in a detail without one")
	}
	if red := redactConninfo("user=a password=b host=c"); strings.Contains(red, "b'") || !strings.Contains(red, "host='c'") {
		t.Errorf("redactConninfo = %s", red)
	}
}

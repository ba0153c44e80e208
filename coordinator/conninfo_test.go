package coordinator

import (
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/conninfo"
)

func TestStandbyConninfoInheritsTemplateAndLibpqAcceptsIt(t *testing.T) {
	template, err := conninfo.Parse(`host=old port=1 user=replicator password='p w\'' application_name=pg9 sslmode=disable`)
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
	for _, want := range []string{"host='db2' port='5432'", "user='other'", "password='pw2'", "application_name='pg3'"} {
		if !strings.Contains(overridden, want) {
			t.Errorf("overrides not applied (%s missing): %s", want, overridden)
		}
	}
}

func TestTemplateDetailNeverHoldsSecretsAndRoundTrips(t *testing.T) {
	template, _ := conninfo.Parse("host=h port=1 user=rep password=topsecret sslpassword=alsosecret sslmode=verify-full application_name=x")
	detail := "frozen: pg2, pg3; " + templateDetail(template)
	if strings.Contains(detail, "secret") {
		t.Fatalf("detail leaks a secret: %s", detail)
	}
	got, ok := templateFromDetail(detail)
	if !ok {
		t.Fatalf("no template found in %q", detail)
	}
	want := conninfo.Params{{Key: "user", Value: "rep"}, {Key: "sslmode", Value: "verify-full"}}
	if !slices.Equal(got, want) {
		t.Errorf("template from detail = %q, want %q", got, want)
	}
	if _, ok := templateFromDetail("frozen: pg2"); ok {
		t.Error("found a template in a detail without one")
	}
}

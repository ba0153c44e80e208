// Package pgxsuite runs the test suite of pgx (github.com/jackc/pgx/v5, at the version in
// pgquorum's go.mod) through a pgquorum proxy in front of a real PostgreSQL 15 quorum cluster,
// and requires what a direct connection gives: no failure and the same number of passing
// tests (SPEC §6: any standard client works through the proxy exactly as it does directly).
//
// It is a package of its own so that `go test ./...` runs it beside the other integration
// tests instead of after them. See pgxsuite_test.go for what is compared and how.
package pgxsuite

package pgauth

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// lookupSQL reads one role's verifier and whether it may log in now. Every
// name is schema-qualified, operators included, so neither search_path nor
// objects created by other roles can change its meaning; the role name is a
// bound parameter. Reading pg_authid needs a superuser (or a role granted
// SELECT on it).
const lookupSQL = `SELECT rolpassword, rolcanlogin,
       rolvaliduntil IS NOT NULL AND rolvaliduntil OPERATOR(pg_catalog.<) pg_catalog.now() AS expired
  FROM pg_catalog.pg_authid
 WHERE rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name`

// Lookup reads the verifier of user on conn, a connection opened as the
// query user. It returns an error wrapping ErrNoVerifier when the role does
// not exist, cannot log in, has a NULL password, has an expired
// rolvaliduntil, or stores a password this package cannot use; the caller
// then runs a fake exchange. Other errors mean the lookup itself failed
// (connection, permissions) and the client cannot be authenticated now.
func Lookup(ctx context.Context, conn *pgconn.PgConn, user string) (Verifier, error) {
	if user == "" || strings.ContainsRune(user, 0) || !utf8.ValidString(user) {
		// No role can have such a name (pgconn talks UTF-8, so PostgreSQL
		// would reject the parameter), and the answer must look like any
		// other unknown role's.
		return Verifier{}, fmt.Errorf("look up verifier of role %q: not a valid role name: %w", user, ErrNoVerifier)
	}
	result := conn.ExecParams(ctx, lookupSQL, [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if result.Err != nil {
		return Verifier{}, fmt.Errorf("look up verifier of role %q: %w", user, result.Err)
	}
	switch len(result.Rows) {
	case 0:
		return Verifier{}, fmt.Errorf("look up verifier of role %q: role does not exist: %w", user, ErrNoVerifier)
	case 1:
	default:
		return Verifier{}, fmt.Errorf("look up verifier of role %q: %d rows for one role name", user, len(result.Rows))
	}
	row := result.Rows[0]
	if len(row) != 3 {
		return Verifier{}, fmt.Errorf("look up verifier of role %q: %d columns instead of 3", user, len(row))
	}
	password, canLogin, expired := row[0], string(row[1]), string(row[2])
	switch {
	case canLogin != "t":
		return Verifier{}, fmt.Errorf("look up verifier of role %q: role cannot log in: %w", user, ErrNoVerifier)
	case password == nil:
		return Verifier{}, fmt.Errorf("look up verifier of role %q: role has no password: %w", user, ErrNoVerifier)
	case expired != "f":
		return Verifier{}, fmt.Errorf("look up verifier of role %q: password expired (rolvaliduntil): %w", user, ErrNoVerifier)
	}
	return parseLookedUp(user, password)
}

// parseLookedUp parses a verifier read for user.
func parseLookedUp(user string, password []byte) (Verifier, error) {
	verifier, err := ParseVerifier(string(password))
	if err != nil {
		return Verifier{}, fmt.Errorf("look up verifier of role %q: %w: %w", user, ErrNoVerifier, err)
	}
	return verifier, nil
}

// LookupWithFunction reads the verifier of user on conn by calling function,
// a schema-qualified name ("pgquorum.get_auth") of a function that takes the
// role name and returns its verifier as text, or NULL when the role must not
// log in (it does not exist, cannot log in, has no password, has expired, or
// the function's owner chose to keep it out). Such a SECURITY DEFINER
// function lets a query user without superuser read verifiers (see
// docs/operations.md). Errors are those of Lookup.
func LookupWithFunction(ctx context.Context, conn *pgconn.PgConn, function, user string) (Verifier, error) {
	schema, name, ok := strings.Cut(function, ".")
	if !ok || schema == "" || name == "" || strings.Contains(name, ".") {
		return Verifier{}, fmt.Errorf("look up verifier of role %q: lookup function %q is not schema.name", user, function)
	}
	if user == "" || strings.ContainsRune(user, 0) || !utf8.ValidString(user) {
		return Verifier{}, fmt.Errorf("look up verifier of role %q: not a valid role name: %w", user, ErrNoVerifier)
	}
	sql := "SELECT " + quoteIdentifier(schema) + "." + quoteIdentifier(name) + "($1::pg_catalog.text)"
	result := conn.ExecParams(ctx, sql, [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if result.Err != nil {
		return Verifier{}, fmt.Errorf("look up verifier of role %q with %s: %w", user, function, result.Err)
	}
	switch {
	case len(result.Rows) == 0 || len(result.Rows) == 1 && len(result.Rows[0]) == 1 && result.Rows[0][0] == nil:
		return Verifier{}, fmt.Errorf("look up verifier of role %q: %s returned no verifier: %w", user, function, ErrNoVerifier)
	case len(result.Rows) > 1 || len(result.Rows[0]) != 1:
		return Verifier{}, fmt.Errorf("look up verifier of role %q: %s returned %d rows, want one text value", user, function, len(result.Rows))
	}
	return parseLookedUp(user, result.Rows[0][0])
}

// quoteIdentifier quotes a SQL identifier.
func quoteIdentifier(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

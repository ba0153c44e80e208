package config

import (
	"net"

	"github.com/pgquorum/pgquorum/conninfo"
)

// QueryConnString returns a libpq keyword/value connection string for the query
// user (auth.query_user) to the PostgreSQL node at address, for probes and admin
// SQL, with the backend's TLS settings (backend.*).
func (c *Config) QueryConnString(address, applicationName string) string {
	return ConnString(address, c.Auth.QueryUser, c.Auth.QueryPassword, c.Auth.QueryDatabase, applicationName, c.BackendTLSParams())
}

// ConnString builds a libpq keyword/value connection string with every value
// quoted, so passwords with spaces or quotes are safe. Empty values are left
// out. tls holds sslmode and the certificate files (BackendTLSParams); without
// sslmode the connection is plaintext (sslmode=disable), never libpq's prefer.
func ConnString(address, user, password, database, applicationName string, tls conninfo.Params) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, "5432"
	}
	var params conninfo.Params
	for _, p := range []conninfo.Param{
		{Key: "host", Value: host}, {Key: "port", Value: port}, {Key: "user", Value: user},
		{Key: "password", Value: password}, {Key: "dbname", Value: database},
		{Key: "application_name", Value: applicationName},
		{Key: "connect_timeout", Value: "5"},
	} {
		if p.Value != "" {
			params = append(params, p)
		}
	}
	if _, ok := tls.Get("sslmode"); !ok {
		params = append(params, conninfo.Param{Key: "sslmode", Value: SSLDisable})
	}
	return append(params, tls...).String()
}

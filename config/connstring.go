package config

import (
	"net"
	"strings"
)

// QueryConnString returns a libpq keyword/value connection string for the query
// user (auth.query_user) to the PostgreSQL node at address, for probes and admin SQL.
func (c *Config) QueryConnString(address, applicationName string) string {
	return ConnString(address, c.Auth.QueryUser, c.Auth.QueryPassword, c.Auth.QueryDatabase, applicationName)
}

// ConnString builds a libpq keyword/value connection string with every value
// quoted, so passwords with spaces or quotes are safe.
func ConnString(address, user, password, database, applicationName string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, "5432"
	}
	var b strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteString("='")
		b.WriteString(strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v))
		b.WriteByte('\'')
	}
	add("host", host)
	add("port", port)
	add("user", user)
	add("password", password)
	add("dbname", database)
	add("application_name", applicationName)
	add("sslmode", "disable")
	add("connect_timeout", "5")
	return b.String()
}

package coordinator

import (
	"net"
	"strings"

	"github.com/pgquorum/pgquorum/conninfo"
)

// This file builds the primary_conninfo of re-pointed standbys from a template
// (package conninfo does the parsing and rendering) and carries the template,
// without secrets, in a freeze step's Detail so that a new leader can rebuild it.

// templateMarker introduces the conninfo template in a freeze step's Detail.
const templateMarker = "primary_conninfo template: "

// standbyConninfo builds the primary_conninfo of standby name following the
// primary at address (host:port, port 5432 when absent), inheriting template.
// user and password, when not empty, override the template's.
func standbyConninfo(template conninfo.Params, address, name, user, password string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, "5432"
	}
	return conninfo.Standby(template, host, port, name, user, password).String()
}

// templateDetail renders the part of a freeze step's Detail that lets a new leader
// rebuild primary_conninfo: the template without secrets.
func templateDetail(template conninfo.Params) string {
	return templateMarker + template.Without(conninfo.AddressingKeys...).Without(conninfo.SecretKeys...).String()
}

// templateFromDetail extracts the template templateDetail wrote; false if detail
// has none.
func templateFromDetail(detail string) (conninfo.Params, bool) {
	i := strings.LastIndex(detail, templateMarker)
	if i < 0 {
		return nil, false
	}
	params, err := conninfo.Parse(detail[i+len(templateMarker):])
	if err != nil {
		return nil, false
	}
	return params.Without(conninfo.AddressingKeys...).Without(conninfo.SecretKeys...), true
}

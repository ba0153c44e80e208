package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"time"
)

// Protocol versions (SPEC §6)
//
// PostgreSQL 18 speaks protocol 3.2 (its one client-visible change: a longer cancel key);
// earlier servers speak 3.0 and answer a 3.2 StartupMessage with NegotiateProtocolVersion
// (newest 3.0). The proxy answers a client exactly as its primary would: before authenticating
// a client that asks for more than 3.0 (or for "_pq_." options), it learns the newest version
// the primary speaks — once per primary address, by sending it a 3.2 StartupMessage and
// reading the first answer ('v' names the newest version; anything else means 3.2 was
// accepted), then closing — and negotiates down to it. So a PostgreSQL 18 client on a
// PostgreSQL 15 primary gets NegotiateProtocolVersion 3.0 and a 4-byte cancel key, as directly,
// and on a PostgreSQL 18 primary 3.2 and the proxy's 32-byte key. The answer is cached per
// address and forgotten whenever routing changes (a failover may land on another version).
// When no primary is agreed yet, or it cannot be reached, the proxy assumes 3.0, which every
// client accepts.

// protocolProbeTimeout bounds learning a primary's protocol version.
const protocolProbeTimeout = 3 * time.Second

// primaryProtocolMinor returns the newest minor version of protocol 3 the primary speaks (at
// most latestProtocolMinor), probing it with user and database the first time.
func (s *Server) primaryProtocolMinor(ctx context.Context, user, database string) uint16 {
	route := s.route.Load()
	if route == nil || !route.Routing {
		return 0
	}
	address := route.Target.Address
	if v, ok := s.protocols.Load(address); ok {
		return v.(uint16)
	}
	minor, err := s.probeProtocolMinor(ctx, address, user, database)
	if err != nil {
		s.log.Debug("cannot learn the primary's protocol version; assuming 3.0", "backend", route.Target.Name, "err", err)
		return 0
	}
	s.protocols.Store(address, minor)
	return minor
}

// probeProtocolMinor sends a protocol 3.2 StartupMessage to address (over TLS as
// Config.BackendTLS says) and reads the server's first answer.
func (s *Server) probeProtocolMinor(ctx context.Context, address, user, database string) (uint16, error) {
	ctx, cancel := context.WithTimeout(ctx, protocolProbeTimeout)
	defer cancel()
	conn, _, err := s.dialBackend(ctx, address)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	startup := []byte{0, 0, 0, 0}
	startup = binary.BigEndian.AppendUint32(startup, protocolMajor3<<16|latestProtocolMinor)
	for _, kv := range [][2]string{{"user", user}, {"database", database}} {
		if kv[1] != "" {
			startup = append(append(append(append(startup, kv[0]...), 0), kv[1]...), 0)
		}
	}
	startup = append(startup, 0)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	if _, err := conn.Write(startup); err != nil {
		return 0, err
	}
	typ, body, err := readMessage(bufio.NewReaderSize(conn, startupBufferSize), maxBackendStartupMessageBody)
	if err != nil {
		return 0, err
	}
	if typ != 'v' {
		return latestProtocolMinor, nil
	}
	if len(body) < 4 {
		return 0, fatalf(codeProtocolViolation, "invalid NegotiateProtocolVersion from the PostgreSQL server")
	}
	return min(uint16(binary.BigEndian.Uint32(body)&0xFFFF), latestProtocolMinor), nil
}

package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Request codes of the packets a client may send before (or instead of) a StartupMessage.
const (
	sslRequestCode    = 80877103 // 1234.5679
	gssEncRequestCode = 80877104 // 1234.5680
	cancelRequestCode = 80877102 // 1234.5678

	protocolMajor3      = 3
	latestProtocolMinor = 2 // 3.2, PostgreSQL 18

	// Cancel keys: 4 bytes in protocol 3.0, up to 256 bytes in 3.2.
	minCancelKeyLength = 4
	maxCancelKeyLength = 256

	// maxAuthMessageBody bounds a client's authentication message (PasswordMessage,
	// SASLInitialResponse, SASLResponse), like PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH.
	maxAuthMessageBody = 65535
)

// startupKind says which packet of the startup phase a client sent.
type startupKind int

const (
	kindStartupMessage startupKind = iota + 1
	kindSSLRequest
	kindGSSENCRequest
	kindCancelRequest
)

// startupParam is one name/value pair of a StartupMessage, in the order the client sent it.
type startupParam struct {
	Name  string
	Value string
}

// startupPacket is one decoded packet of the startup phase. Which fields are set depends on Kind.
type startupPacket struct {
	Kind startupKind

	// StartupMessage
	ProtocolMinor          uint16         // requested minor version of protocol 3 (any value)
	Params                 []startupParam // every parameter except "_pq_." protocol options
	UnknownProtocolOptions []string       // names of "_pq_." options (none is supported yet)

	// CancelRequest
	CancelProcessID uint32
	CancelSecret    []byte // 4 bytes (protocol 3.0) up to 256 bytes (3.2)
}

// param returns the value of the named startup parameter (the last one when repeated).
func (p *startupPacket) param(name string) (string, bool) {
	for i := len(p.Params) - 1; i >= 0; i-- {
		if p.Params[i].Name == name {
			return p.Params[i].Value, true
		}
	}
	return "", false
}

// errClientGone means the client closed the connection before sending a complete first packet;
// there is nobody to tell (health checks and port scanners do this).
var errClientGone = errors.New("client closed the connection during startup")

// readStartupPacket reads one length-prefixed startup-phase packet and decodes it. maxBody bounds
// the packet body (the length word excluded); nothing larger is ever allocated. Errors that the
// client should hear about are *clientError.
func readStartupPacket(r *bufio.Reader, maxBody int) (startupPacket, error) {
	var lengthWord [4]byte
	if n, err := io.ReadFull(r, lengthWord[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return startupPacket{}, errClientGone
		}
		return startupPacket{}, fatalf(codeProtocolViolation, "incomplete startup packet").withCause(err)
	}
	bodyLength := int64(int32(binary.BigEndian.Uint32(lengthWord[:]))) - 4
	if bodyLength < 4 || bodyLength > int64(maxBody) {
		return startupPacket{}, fatalf(codeProtocolViolation, "invalid length of startup packet")
	}
	body := make([]byte, bodyLength)
	if _, err := io.ReadFull(r, body); err != nil {
		return startupPacket{}, fatalf(codeProtocolViolation, "incomplete startup packet").withCause(err)
	}
	return parseStartupPacket(body)
}

// parseStartupPacket decodes the body of a startup-phase packet (everything after the length
// word) with PostgreSQL's rules and messages.
func parseStartupPacket(body []byte) (startupPacket, error) {
	if len(body) < 4 {
		return startupPacket{}, fatalf(codeProtocolViolation, "invalid length of startup packet")
	}
	code := binary.BigEndian.Uint32(body)
	switch code {
	case sslRequestCode, gssEncRequestCode:
		if len(body) != 4 {
			return startupPacket{}, fatalf(codeProtocolViolation, "invalid length of startup packet")
		}
		if code == sslRequestCode {
			return startupPacket{Kind: kindSSLRequest}, nil
		}
		return startupPacket{Kind: kindGSSENCRequest}, nil
	case cancelRequestCode:
		keyLength := len(body) - 8
		if keyLength < minCancelKeyLength || keyLength > maxCancelKeyLength {
			return startupPacket{}, fatalf(codeProtocolViolation, "invalid length of query cancel packet")
		}
		return startupPacket{
			Kind:            kindCancelRequest,
			CancelProcessID: binary.BigEndian.Uint32(body[4:]),
			CancelSecret:    body[8:],
		}, nil
	}
	major, minor := code>>16, uint16(code&0xFFFF)
	if major != protocolMajor3 {
		return startupPacket{}, fatalf(codeFeatureNotSupported,
			"unsupported frontend protocol %d.%d: server supports 3.0 to 3.%d", major, minor, latestProtocolMinor)
	}
	pkt := startupPacket{Kind: kindStartupMessage, ProtocolMinor: minor}
	if err := parseStartupParams(body[4:], &pkt); err != nil {
		return startupPacket{}, err
	}
	return pkt, nil
}

// parseStartupParams decodes the NUL-terminated name/value pairs of a StartupMessage, which end
// with an empty name, and checks the parameters PostgreSQL checks.
func parseStartupParams(b []byte, pkt *startupPacket) error {
	layoutErr := fatalf(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
	for {
		if len(b) == 0 {
			return layoutErr
		}
		if b[0] == 0 {
			if len(b) != 1 {
				return layoutErr
			}
			break
		}
		nameEnd := indexNUL(b)
		if nameEnd < 0 {
			return layoutErr
		}
		name := string(b[:nameEnd])
		b = b[nameEnd+1:]
		valueEnd := indexNUL(b)
		if valueEnd < 0 {
			return layoutErr
		}
		value := string(b[:valueEnd])
		b = b[valueEnd+1:]
		if strings.HasPrefix(name, "_pq_.") {
			pkt.UnknownProtocolOptions = append(pkt.UnknownProtocolOptions, name)
			continue
		}
		pkt.Params = append(pkt.Params, startupParam{Name: name, Value: value})
	}
	if user, _ := pkt.param("user"); user == "" {
		return fatalf(codeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet")
	}
	if value, ok := pkt.param("replication"); ok {
		mode, valid := replicationMode(value)
		if !valid {
			return fatalf(codeProtocolViolation, "invalid value for parameter \"replication\"").
				withHint("Valid values are: \"false\", 0, \"true\", 1, \"database\".")
		}
		if mode {
			return fatalf(codeFeatureNotSupported, "replication connections are not supported through pgquorum").
				withHint("Connect to the PostgreSQL server directly for streaming or logical replication.")
		}
	}
	return nil
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// replicationMode interprets the "replication" startup parameter like PostgreSQL: "database" or
// a true boolean asks for a walsender. valid is false for a value PostgreSQL would reject.
func replicationMode(value string) (replication, valid bool) {
	if value == "database" {
		return true, true
	}
	b, ok := parsePostgresBool(value)
	return b, ok
}

// parsePostgresBool accepts what PostgreSQL's parse_bool accepts: unique prefixes of true,
// false, yes, no, on, off (case-insensitive), and 1 or 0.
func parsePostgresBool(value string) (result, ok bool) {
	v := strings.ToLower(value)
	if v == "" {
		return false, false
	}
	prefixOf := func(word string) bool { return strings.HasPrefix(word, v) }
	switch {
	case v == "1":
		return true, true
	case v == "0":
		return false, true
	case v[0] == 't' && prefixOf("true"), v[0] == 'y' && prefixOf("yes"):
		return true, true
	case v[0] == 'f' && prefixOf("false"), v[0] == 'n' && prefixOf("no"):
		return false, true
	case len(v) >= 2 && prefixOf("on"):
		return true, true
	case len(v) >= 2 && prefixOf("off"):
		return false, true
	}
	return false, false
}

// readMessage reads one typed protocol message (type byte, length word, body) during the startup
// phase. maxBody bounds the body; a larger or negative length is a protocol violation.
func readMessage(r *bufio.Reader, maxBody int) (byte, []byte, error) {
	var header [5]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return 0, nil, fmt.Errorf("read message header: %w", err)
	}
	bodyLength, lengthErr := messageBodyLength(header, int64(maxBody))
	if lengthErr != nil {
		return 0, nil, lengthErr
	}
	body := make([]byte, bodyLength)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("read message body: %w", err)
	}
	return header[0], body, nil
}

// appendMessage appends a complete typed message (type, length word, body) to dst.
func appendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+4))
	return append(dst, body...)
}

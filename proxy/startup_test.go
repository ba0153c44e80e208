package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// packet builds a length-prefixed startup-phase packet from a 32-bit code and a body.
func packet(code uint32, body ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0)
	b = binary.BigEndian.AppendUint32(b, code)
	for _, part := range body {
		b = append(b, part...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// params encodes name/value pairs with the terminating empty name.
func params(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	return append(b, 0)
}

func withLength(length int32, rest []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(length)), rest...)
}

func TestReadStartupPacket(t *testing.T) {
	const v30, v32 = 3 << 16, 3<<16 | 2
	tests := []struct {
		name    string
		input   []byte
		want    startupPacket
		errCode string // SQLSTATE of the expected *clientError; "" = success
		errText string
		gone    bool // errClientGone expected
	}{
		{name: "protocol 3.0", input: packet(v30, params("user", "alice", "database", "db", "application_name", "app")),
			want: startupPacket{Kind: kindStartupMessage, ProtocolMinor: 0, Params: []startupParam{
				{"user", "alice"}, {"database", "db"}, {"application_name", "app"}}}},
		{name: "protocol 3.2", input: packet(v32, params("user", "bob")),
			want: startupPacket{Kind: kindStartupMessage, ProtocolMinor: 2, Params: []startupParam{{"user", "bob"}}}},
		{name: "newer minor is accepted for negotiation", input: packet(3<<16|9, params("user", "bob")),
			want: startupPacket{Kind: kindStartupMessage, ProtocolMinor: 9, Params: []startupParam{{"user", "bob"}}}},
		{name: "protocol options are set apart", input: packet(v30, params("user", "u", "_pq_.foo", "1", "options", "-c x=y")),
			want: startupPacket{Kind: kindStartupMessage, Params: []startupParam{{"user", "u"}, {"options", "-c x=y"}},
				UnknownProtocolOptions: []string{"_pq_.foo"}}},
		{name: "replication false is allowed", input: packet(v30, params("user", "u", "replication", "off")),
			want: startupPacket{Kind: kindStartupMessage, Params: []startupParam{{"user", "u"}, {"replication", "off"}}}},
		{name: "SSLRequest", input: packet(sslRequestCode), want: startupPacket{Kind: kindSSLRequest}},
		{name: "GSSENCRequest", input: packet(gssEncRequestCode), want: startupPacket{Kind: kindGSSENCRequest}},
		{name: "CancelRequest 3.0", input: packet(cancelRequestCode, []byte{0, 0, 0, 7}, []byte{1, 2, 3, 4}),
			want: startupPacket{Kind: kindCancelRequest, CancelProcessID: 7, CancelSecret: []byte{1, 2, 3, 4}}},
		{name: "CancelRequest 3.2 long key", input: packet(cancelRequestCode, []byte{0, 0, 0, 8}, bytes.Repeat([]byte{9}, 256)),
			want: startupPacket{Kind: kindCancelRequest, CancelProcessID: 8, CancelSecret: bytes.Repeat([]byte{9}, 256)}},

		{name: "empty input", input: nil, gone: true},
		{name: "negative length", input: withLength(-8, make([]byte, 8)), errCode: codeProtocolViolation, errText: "invalid length of startup packet"},
		{name: "length too small", input: withLength(7, make([]byte, 8)), errCode: codeProtocolViolation, errText: "invalid length"},
		{name: "oversized length", input: withLength(10_000_000, make([]byte, 8)), errCode: codeProtocolViolation, errText: "invalid length"},
		{name: "max int length", input: withLength(1<<31-1, nil), errCode: codeProtocolViolation, errText: "invalid length"},
		{name: "truncated body", input: withLength(100, []byte{0, 3, 0, 0}), errCode: codeProtocolViolation, errText: "incomplete startup packet"},
		{name: "truncated length word", input: []byte{0, 0}, errCode: codeProtocolViolation, errText: "incomplete startup packet"},
		{name: "protocol 2", input: packet(2<<16, params("user", "u")), errCode: codeFeatureNotSupported, errText: "unsupported frontend protocol 2.0"},
		{name: "protocol 4", input: packet(4<<16, params("user", "u")), errCode: codeFeatureNotSupported, errText: "unsupported frontend protocol 4.0"},
		{name: "garbage code", input: packet(0x47455420, []byte("/ HTTP/1.1\r\n")), errCode: codeFeatureNotSupported},
		{name: "missing terminator", input: packet(v30, []byte("user\x00alice\x00")), errCode: codeProtocolViolation, errText: "invalid startup packet layout"},
		{name: "value without NUL", input: packet(v30, []byte("user\x00alice")), errCode: codeProtocolViolation, errText: "invalid startup packet layout"},
		{name: "bytes after terminator", input: packet(v30, []byte("user\x00a\x00\x00x")), errCode: codeProtocolViolation, errText: "invalid startup packet layout"},
		{name: "no parameters at all", input: packet(v30), errCode: codeProtocolViolation, errText: "invalid startup packet layout"},
		{name: "no user", input: packet(v30, params("database", "d")), errCode: codeInvalidAuthSpec, errText: "no PostgreSQL user name"},
		{name: "empty user", input: packet(v30, params("user", "")), errCode: codeInvalidAuthSpec},
		{name: "physical replication refused", input: packet(v30, params("user", "u", "replication", "true")), errCode: codeFeatureNotSupported, errText: "replication connections are not supported"},
		{name: "logical replication refused", input: packet(v30, params("user", "u", "replication", "database")), errCode: codeFeatureNotSupported},
		{name: "replication=1 refused", input: packet(v30, params("user", "u", "replication", "1")), errCode: codeFeatureNotSupported},
		{name: "invalid replication value", input: packet(v30, params("user", "u", "replication", "maybe")), errCode: codeProtocolViolation, errText: "invalid value for parameter \"replication\""},
		{name: "SSLRequest with extra bytes", input: packet(sslRequestCode, []byte{1}), errCode: codeProtocolViolation},
		{name: "cancel key too short", input: packet(cancelRequestCode, []byte{0, 0, 0, 7}, []byte{1, 2, 3}), errCode: codeProtocolViolation, errText: "cancel"},
		{name: "cancel key too long", input: packet(cancelRequestCode, []byte{0, 0, 0, 7}, make([]byte, 257)), errCode: codeProtocolViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readStartupPacket(bufio.NewReader(bytes.NewReader(tt.input)), DefaultMaxStartupPacket)
			switch {
			case tt.gone:
				if !errors.Is(err, errClientGone) {
					t.Fatalf("err = %v, want errClientGone", err)
				}
			case tt.errCode != "":
				var ce *clientError
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v (%T), want *clientError %s", err, err, tt.errCode)
				}
				if ce.Code != tt.errCode || ce.Severity != severityFatal || !strings.Contains(ce.Message, tt.errText) {
					t.Fatalf("err = %s %s %q, want FATAL %s containing %q", ce.Severity, ce.Code, ce.Message, tt.errCode, tt.errText)
				}
			default:
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !samePacket(got, tt.want) {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
			}
		})
	}
}

func samePacket(a, b startupPacket) bool {
	if a.Kind != b.Kind || a.ProtocolMinor != b.ProtocolMinor || a.CancelProcessID != b.CancelProcessID ||
		!bytes.Equal(a.CancelSecret, b.CancelSecret) || len(a.Params) != len(b.Params) ||
		len(a.UnknownProtocolOptions) != len(b.UnknownProtocolOptions) {
		return false
	}
	for i := range a.Params {
		if a.Params[i] != b.Params[i] {
			return false
		}
	}
	for i := range a.UnknownProtocolOptions {
		if a.UnknownProtocolOptions[i] != b.UnknownProtocolOptions[i] {
			return false
		}
	}
	return true
}

func TestParsePostgresBool(t *testing.T) {
	tests := []struct {
		in       string
		want, ok bool
	}{
		{"true", true, true}, {"t", true, true}, {"TRUE", true, true}, {"yes", true, true}, {"y", true, true},
		{"on", true, true}, {"1", true, true}, {"false", false, true}, {"f", false, true}, {"no", false, true},
		{"n", false, true}, {"off", false, true}, {"of", false, true}, {"0", false, true},
		{"o", false, false}, {"", false, false}, {"truex", false, false}, {"2", false, false}, {"10", false, false},
	}
	for _, tt := range tests {
		got, ok := parsePostgresBool(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parsePostgresBool(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestReadStartupPacketDoesNotAllocateClaimedLength proves a huge announced length is refused
// before anything of that size is allocated.
func TestReadStartupPacketDoesNotAllocateClaimedLength(t *testing.T) {
	input := withLength(1<<30, make([]byte, 64))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		_, err := readStartupPacket(bufio.NewReaderSize(bytes.NewReader(input), 64), DefaultMaxStartupPacket)
		if err == nil {
			t.Fatal("oversized packet accepted")
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("100 refused packets allocated %d bytes", grew)
	}
}

// FuzzReadStartup feeds arbitrary bytes to the startup-phase parser: it must return a valid
// packet or an error, never panic, and never accept (or allocate) more than the bound.
func FuzzReadStartup(f *testing.F) {
	f.Add(packet(3<<16, params("user", "alice", "database", "db")))
	f.Add(packet(3<<16|2, params("user", "bob", "_pq_.x", "y")))
	f.Add(packet(sslRequestCode))
	f.Add(append(packet(sslRequestCode), packet(3<<16, params("user", "u"))...))
	f.Add(packet(gssEncRequestCode))
	f.Add(packet(cancelRequestCode, []byte{0, 0, 0, 1}, []byte{1, 2, 3, 4}))
	f.Add(withLength(-1, nil))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	const maxBody = 512
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 64)
		for range 4 { // a few packets in a row, as a client may send SSLRequest then StartupMessage
			pkt, err := readStartupPacket(r, maxBody)
			if err != nil {
				var ce *clientError
				if !errors.As(err, &ce) && !errors.Is(err, errClientGone) && !errors.Is(err, io.EOF) {
					t.Fatalf("error of unexpected type %T: %v", err, err)
				}
				if ce != nil && (ce.Code == "" || ce.Message == "") {
					t.Fatalf("client error without code or message: %+v", ce)
				}
				return
			}
			switch pkt.Kind {
			case kindStartupMessage:
				if user, _ := pkt.param("user"); user == "" {
					t.Fatal("startup message without user accepted")
				}
				size := 0
				for _, p := range pkt.Params {
					size += len(p.Name) + len(p.Value) + 2
					if strings.HasPrefix(p.Name, "_pq_.") {
						t.Fatalf("protocol option %q left in params", p.Name)
					}
				}
				if size > maxBody {
					t.Fatalf("accepted %d bytes of parameters, bound is %d", size, maxBody)
				}
				if mode, _ := pkt.param("replication"); mode != "" {
					if repl, ok := replicationMode(mode); !ok || repl {
						t.Fatalf("replication=%q accepted", mode)
					}
				}
			case kindCancelRequest:
				if n := len(pkt.CancelSecret); n < minCancelKeyLength || n > maxCancelKeyLength {
					t.Fatalf("cancel key of %d bytes accepted", n)
				}
			case kindSSLRequest, kindGSSENCRequest:
			default:
				t.Fatalf("unknown kind %d", pkt.Kind)
			}
		}
	})
}

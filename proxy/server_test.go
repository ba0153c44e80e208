package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// routeFunc adapts a function to Router.
type routeFunc func() (Route, <-chan struct{})

func (f routeFunc) Route() (Route, <-chan struct{}) { return f() }
func (f routeFunc) BackendFailed(Target)            {}

// staticRoute returns a Router whose route is always r.
func staticRoute(r Route) Router {
	return routeFunc(func() (Route, <-chan struct{}) { return r, nil })
}

// serveForTest starts a trust-auth server with router and returns it; it is shut down at the
// end of the test.
func serveForTest(t *testing.T, router Router, hold time.Duration) *Server {
	t.Helper()
	srv, err := NewServer(Config{NodeID: 1, ListenAddr: "127.0.0.1:0", Router: router, AuthMethod: AuthTrust, HoldTimeout: hold})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}

// startupError connects, sends a StartupMessage and returns the ErrorResponse the proxy ends with.
func startupError(t *testing.T, srv *Server) *pgproto3.ErrorResponse {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(packet(3<<16, params("user", "u", "database", "d"))); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			copied := *e
			return &copied
		}
	}
}

func TestStartupErrorsReachTheClient(t *testing.T) {
	unreachable := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String() // closed when this returns: connecting is refused
	}()
	tests := []struct {
		name   string
		router Router
		code   string
	}{
		{"router panics in a session", routeFunc(func() (Route, <-chan struct{}) {
			if !calledBy("watchRoutes") && !calledBy("NewServer") {
				panic("router bug")
			}
			return Route{}, nil
		}), codeInternalError},
		{"no primary within the hold timeout", staticRoute(Route{}), codeCannotConnectNow},
		{"primary refuses connections until the hold timeout",
			staticRoute(Route{Routing: true, Target: Target{Name: "pgX", Address: unreachable}}), codeCannotConnectNow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serveForTest(t, tt.router, 200*time.Millisecond)
			for range 2 { // the second connection proves the server survived the first
				e := startupError(t, srv)
				if e.Severity != severityFatal || e.Code != tt.code {
					t.Fatalf("got %s %s %q, want FATAL %s", e.Severity, e.Code, e.Message, tt.code)
				}
			}
			if st := srv.Stats(); st.StartupFailures != 2 || st.TotalClientConnections != 2 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestShutdownRefusesSessionsInStartup(t *testing.T) {
	srv, err := NewServer(Config{NodeID: 1, ListenAddr: "127.0.0.1:0", AuthMethod: AuthTrust,
		Router: staticRoute(Route{})})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background())
	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(packet(3<<16, params("user", "u")))
	// Wait until the session waits for the router (it answered nothing yet, so poll the stats).
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().ClientConnections != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	header := make([]byte, 5)
	if _, err := conn.Read(header); err != nil || header[0] != 'E' {
		t.Fatalf("got %q %v, want an ErrorResponse", header, err)
	}
	body := make([]byte, binary.BigEndian.Uint32(header[1:])-4)
	if _, err := conn.Read(body); err != nil {
		t.Fatal(err)
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(body); err != nil || e.Code != codeCannotConnectNow {
		t.Fatalf("got %s %q, want 57P03", e.Code, e.Message)
	}
}

// calledBy reports whether the function name appears on the calling goroutine's stack.
func calledBy(name string) bool {
	return strings.Contains(string(debug.Stack()), "."+name+"(")
}

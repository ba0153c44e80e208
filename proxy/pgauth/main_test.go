package pgauth_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind (the fake
// server, the PostgreSQL waiter, pgconn's watchers).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

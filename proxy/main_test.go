package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every session goroutine,
// route watcher and server the tests start must stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

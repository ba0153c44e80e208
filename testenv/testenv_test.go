package testenv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	calls := 0
	Eventually(t, t.Context(), time.Second, "the third call", func() (bool, error) {
		calls++
		if calls < 3 {
			return false, errors.New("not yet")
		}
		return true, nil
	})
	if calls != 3 {
		t.Fatalf("%d calls, want 3", calls)
	}
}

// A condition that never holds fails the test, naming the last error (run in a fake TB so
// that the failure can be checked).
func TestEventuallyFailsWhenTheTimeoutPasses(t *testing.T) {
	fake := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(fake, context.Background(), 20*time.Millisecond, "never", func() (bool, error) {
			return false, errors.New("still failing")
		})
	}()
	<-done
	if want := "waiting for never: context deadline exceeded (last error: still failing)"; fake.fatal != want {
		t.Fatalf("failure %q, want %q", fake.fatal, want)
	}
}

// recordingTB records Fatalf and ends the goroutine as the real one does.
type recordingTB struct {
	testing.TB
	fatal string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

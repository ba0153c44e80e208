// Package testenv is what the tests of every package share about their environment: whether
// they run under CI (then a missing PostgreSQL or tool fails the test instead of skipping it),
// where PostgreSQL's programs are, temporary directories the postgres OS user can use, and
// waiting for a condition with a bound.
//
// It is imported only by tests.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/localcluster"
)

// CI reports whether the environment variable CI is true ("true", "1", ...).
func CI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Missing skips the test for a missing prerequisite, or fails it when CI is set: a test that
// skips in CI lets a broken build land.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI=true: failing instead of skipping)", msg)
	}
	t.Skipf("%s; skipping (set CI=true to make this a failure)", msg)
}

// RequirePostgres returns the directory of the PostgreSQL server programs (binDir, or found as
// localcluster.FindBinDir does when it is ""), or skips the test (fails it under CI).
func RequirePostgres(t testing.TB, binDir string) string {
	t.Helper()
	dir, err := localcluster.FindBinDir(binDir)
	if err != nil {
		Missing(t, "PostgreSQL is required: %v", err)
	}
	return dir
}

// TempDir returns a fresh t.TempDir that the postgres OS user can traverse: t.TempDir makes
// <tmp>/<test name><random>/<nnn>, both 0700, and PostgreSQL runs as postgres when we are root.
func TempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("make %s traversable: %v", d, err)
		}
	}
	return dir
}

// Eventually polls check until it reports true without an error. It fails the test, with the
// last error, when ctx ends or timeout (when not 0) passes first. Polls start at 1 ms apart and
// slow down to 20 ms.
func Eventually(t testing.TB, ctx context.Context, timeout time.Duration, what string, check func() (bool, error)) {
	t.Helper()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	pause := time.Millisecond
	var lastErr error
	for {
		ok, err := check()
		if ok && err == nil {
			return
		}
		lastErr = err
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			if lastErr != nil {
				t.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), lastErr)
			}
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-timer.C:
		}
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// Cond adapts a condition that cannot fail for Eventually.
func Cond(cond func() bool) func() (bool, error) {
	return func() (bool, error) { return cond(), nil }
}

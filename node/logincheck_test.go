package node

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgquorum/pgquorum/proxy"
)

// TestLoginCheck runs the readiness login check on a fake clock: the first
// answer about a primary waits for a login; later answers come from the
// cache, refreshed in the background once older than loginCheckEvery; a
// failing login makes the proxy not ready with the reason; a new primary is
// checked afresh.
func TestLoginCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		logins := map[string]int{}
		refuse := map[string]error{}
		var wg sync.WaitGroup
		c := &loginCheck{
			login: func(ctx context.Context, address string) error {
				time.Sleep(10 * time.Millisecond) // a login takes a little time
				mu.Lock()
				defer mu.Unlock()
				logins[address]++
				return refuse[address]
			},
			start: func(f func(context.Context)) {
				wg.Add(1)
				go func() { defer wg.Done(); f(t.Context()) }()
			},
			now: time.Now,
		}
		pg1 := proxy.Target{Name: "pg1", Address: "10.0.0.1:5432", Epoch: 1}
		if ok, reason := c.Ready(pg1); !ok {
			t.Fatalf("first check of a working primary: %s", reason)
		}
		for range 10 {
			if ok, _ := c.Ready(pg1); !ok {
				t.Fatal("not ready from the cache")
			}
		}
		if logins["10.0.0.1:5432"] != 1 {
			t.Fatalf("%d logins for 11 questions within %v, want 1", logins["10.0.0.1:5432"], loginCheckEvery)
		}

		mu.Lock()
		refuse["10.0.0.1:5432"] = errors.New(`FATAL: remaining connection slots are reserved (SQLSTATE 53300)`)
		mu.Unlock()
		time.Sleep(loginCheckEvery)
		if ok, _ := c.Ready(pg1); !ok {
			t.Fatal("a stale good answer is served while the refresh runs")
		}
		wg.Wait() // the refresh
		ok, reason := c.Ready(pg1)
		if ok || !strings.Contains(reason, "cannot open a session to the primary pg1 (10.0.0.1:5432)") || !strings.Contains(reason, "53300") {
			t.Fatalf("after a refused login: %v %q", ok, reason)
		}

		// A failover: the new primary is checked before the proxy says ready.
		pg2 := proxy.Target{Name: "pg2", Address: "10.0.0.2:5432", Epoch: 3}
		if ok, reason := c.Ready(pg2); !ok || logins["10.0.0.2:5432"] != 1 {
			t.Fatalf("the new primary: %v %q, %d logins", ok, reason, logins["10.0.0.2:5432"])
		}

		// A login that hangs: the first answer does not wait for it.
		pg3 := proxy.Target{Name: "pg3", Address: "10.0.0.3:5432", Epoch: 4}
		c.login = func(ctx context.Context, address string) error {
			<-ctx.Done()
			return ctx.Err()
		}
		if ok, reason := c.Ready(pg3); ok || !strings.Contains(reason, "checking") {
			t.Fatalf("a primary whose login hangs: %v %q", ok, reason)
		}
		wg.Wait()
		if ok, reason := c.Ready(pg3); ok || !strings.Contains(reason, "no answer within") {
			t.Fatalf("after the login timed out: %v %q", ok, reason)
		}
		wg.Wait()
	})
}

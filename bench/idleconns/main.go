// Command idleconns measures the resident memory a proxy spends per idle client
// connection: it opens N client sessions (startup completed, then idle) through
// pgquorum and through PgBouncer (session mode), and reports the growth of each
// proxy's RSS divided by N.
//
// The server side is bench/fakepg, because N real PostgreSQL backends (10,000)
// do not fit this machine; the proxy's per-session memory does not depend on
// what the server is. Run from the repository root, as root or any user:
//
//	go run ./bench/idleconns -conns 10000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/bench/benchenv"
	"github.com/pgquorum/pgquorum/bench/fakepg"
)

func main() {
	conns := flag.Int("conns", 10000, "idle client connections to open through each proxy")
	settle := flag.Duration("settle", 3*time.Second, "pause before reading RSS")
	flag.Parse()
	if err := run(*conns, *settle); err != nil {
		log.Fatal(err)
	}
}

func run(n int, settle time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The proxy holds two descriptors per session (client and backend); so
	// does this process (client side and fake server side).
	limit, err := benchenv.RaiseFileLimit(uint64(2*n + 1000))
	if err != nil {
		return err
	}
	if need := uint64(2*n + 200); limit < need {
		return fmt.Errorf("%d sessions need about %d open files per process, but the limit is %d here "+
			"(raising it needs CAP_SYS_RESOURCE); run with -conns %d or fewer", n, need, limit, (limit-200)/2)
	}
	dir, err := os.MkdirTemp("", "pgquorum-idleconns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// PgBouncer runs as the postgres OS user when we are root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}

	fake, err := fakepg.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	go fake.Serve(ctx)
	fakeHost, fakePortStr, _ := net.SplitHostPort(fake.Addr())
	fakePort, _ := strconv.Atoi(fakePortStr)

	bin, err := benchenv.BuildPgquorum(ctx, dir)
	if err != nil {
		return err
	}

	// pgquorum
	qPort, _ := benchenv.FreePort()
	node := benchenv.PgquorumNode{Dir: dir, ClientPort: qPort, Backends: [][2]string{{"fake", fake.Addr()}},
		AuthMethod: "trust", QueryUser: "bench"}
	cfgPath, err := node.WriteConfig()
	if err != nil {
		return err
	}
	pq, err := benchenv.Start(bin, []string{"run", "--config", cfgPath}, dir+"/pgquorum.log", "")
	if err != nil {
		return err
	}
	defer pq.Stop()
	// The fake server does not answer pgquorum's health probes the way
	// PostgreSQL does, so the node would soon see its only backend "down" and
	// hold traffic. Pause automatic failover before that can happen.
	adminAddr := fmt.Sprintf("127.0.0.1:%d", node.AdminPort)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = benchenv.WaitPort(wctx, adminAddr)
	for err == nil {
		// The first calls may find no Raft leader yet.
		if err = admin.NewClient(adminAddr, node.AdminToken).SetPaused(wctx, true); err == nil || wctx.Err() != nil {
			break
		}
		err = nil
		time.Sleep(100 * time.Millisecond)
	}
	wcancel()
	if err != nil {
		return fmt.Errorf("pause automatic failover on the benchmark node: %w", err)
	}

	// PgBouncer, as the postgres user when we are root (it refuses root).
	bDir := dir + "/pgbouncer"
	if err := os.MkdirAll(bDir, 0o755); err != nil {
		return err
	}
	bPort, _ := benchenv.FreePort()
	ini, err := benchenv.PgBouncerConfig(bDir, bPort, fakeHost, fakePort, map[string]string{"bench": ""}, n+100)
	if err != nil {
		return err
	}
	if err := benchenv.ChownToPostgres(bDir); err != nil {
		return err
	}
	pb, err := benchenv.Start("pgbouncer", []string{ini}, bDir+"/stdout.log", "postgres")
	if err != nil {
		return err
	}
	defer pb.Stop()

	fmt.Printf("| proxy | idle connections | RSS before (KiB) | RSS after (KiB) | KiB per connection |\n")
	fmt.Printf("| --- | ---: | ---: | ---: | ---: |\n")
	for _, target := range []struct {
		name string
		addr string
		pid  int
	}{
		{"pgquorum", fmt.Sprintf("127.0.0.1:%d", qPort), pq.Cmd.Process.Pid},
		{"PgBouncer 1.18 (session)", fmt.Sprintf("127.0.0.1:%d", bPort), pb.Cmd.Process.Pid},
	} {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err := benchenv.WaitPort(wctx, target.addr)
		wcancel()
		if err != nil {
			return fmt.Errorf("%s: %w", target.name, err)
		}
		// Warm up: a few sessions so that lazily initialised state is not counted.
		warm, err := openSessions(target.addr, 10)
		if err != nil {
			return fmt.Errorf("%s warm-up: %w", target.name, err)
		}
		time.Sleep(settle)
		before, err := benchenv.RSSKiB(target.pid)
		if err != nil {
			return err
		}
		sessions, err := openSessions(target.addr, n)
		if err != nil {
			closeAll(warm)
			return fmt.Errorf("%s: %w", target.name, err)
		}
		time.Sleep(settle)
		after, err := benchenv.RSSKiB(target.pid)
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %d | %d | %d | %.1f |\n", target.name, n, before, after, float64(after-before)/float64(n))
		closeAll(sessions)
		closeAll(warm)
	}
	return nil
}

// openSessions opens n sessions to addr, each completing startup up to its
// first ReadyForQuery, with bounded parallelism.
func openSessions(addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := openSession(addr)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	var first error
	failed := 0
	for err := range errs {
		failed++
		if first == nil {
			first = err
		}
	}
	if failed > 0 {
		closeAll(conns)
		return nil, fmt.Errorf("%d of %d sessions failed, first: %w", failed, n, first)
	}
	return conns, nil
}

func openSession(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "bench", "database": "bench"}})
	if err := fe.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			c.Close()
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			_ = c.SetDeadline(time.Time{})
			return c, nil
		case *pgproto3.ErrorResponse:
			c.Close()
			return nil, errors.New(m.Message)
		}
	}
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

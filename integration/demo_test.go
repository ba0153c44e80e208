package integration

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/testenv"
)

// TestDemoStartsAndStopsCleanly runs `pgquorum demo` as a newcomer would, connects
// through a printed connection string, then presses Ctrl-C (SIGINT), or closes the
// terminal (SIGHUP), and checks that the demo exits 0 and removes what it created.
func TestDemoStartsAndStopsCleanly(t *testing.T) {
	testenv.RequirePostgres(t, "")
	bin := PgquorumBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) { demoStartsAndStops(t, bin, sig) })
	}
}

func demoStartsAndStops(t *testing.T, bin string, sig syscall.Signal) {
	cmd := exec.Command(bin, "demo")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()

	var out strings.Builder
	var url, dir string
	urlPattern := regexp.MustCompile(`postgres://\S+`)
	dirPattern := regexp.MustCompile(`cluster in (\S+) \.\.\.`)
	deadline := time.After(2 * time.Minute)
	for ready := false; !ready; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited before it was ready:\n%s\nstderr:\n%s", out.String(), stderr.String())
			}
			out.WriteString(line + "\n")
			if m := dirPattern.FindStringSubmatch(line); m != nil {
				dir = m[1]
			}
			if url == "" {
				url = urlPattern.FindString(line)
			}
			ready = strings.Contains(line, "Press Ctrl-C")
		case <-deadline:
			t.Fatalf("demo not ready after 2 minutes:\n%s\nstderr:\n%s", out.String(), stderr.String())
		}
	}
	if url == "" || dir == "" {
		t.Fatalf("demo printed no connection string or directory:\n%s", out.String())
	}
	for _, want := range []string{"pg1", "pg2", "pg3", "proxy 1", "proxy 2", "proxy 3", "admin http://", "Try this", "pgquorum list"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect with the printed string %s: %v", url, err)
	}
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("query through the demo proxy: in recovery %v, err %v", inRecovery, err)
	}
	conn.Close(ctx)

	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // keep the scanner unblocked until the demo exits
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exited with %v after %v\nstderr:\n%s", err, sig, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("demo did not stop within 60 s of %v", sig)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("demo left %s behind (stat: %v)", dir, err)
	}
}

// Command relaydesigns measures what a relay design costs per round trip, to decide how
// pgquorum's relay should wait for bytes (issue 12). It relays ping-pong traffic between
// fake clients and a fake server through a child process running one of these designs, and
// reports the child's own CPU time, system calls and context switches per round trip at a
// fixed rate (like `pgbench -S -R 3000 -c 8`, where the proxy's work per transaction is
// what is compared):
//
//   - goroutines: two goroutines per connection pair, each waiting in Go's netpoller through
//     syscall.RawConn and reading and writing with raw system calls (pgquorum's relay today);
//   - goroutines-1p: the same with GOMAXPROCS=1;
//   - epoll: one event-loop goroutine over raw file descriptors taken out of Go's netpoller
//     (an epoll instance of its own, edge-triggered), the way PgBouncer and HAProxy work;
//   - epoll-spin: the same loop, polling without blocking for up to 50 µs before it sleeps
//     in epoll_wait ("spin before parking");
//   - epoll-locked: the same loop on a locked thread, waiting in a raw epoll_wait that keeps
//     its P (no hand-off by the runtime);
//   - io_uring, io_uring-defer: one locked-thread loop over an io_uring (iouring.go): a send
//     and the next receive submitted, and the next completion awaited, in one system call per
//     message; -defer runs completions only when the loop waits (SINGLE_ISSUER|DEFER_TASKRUN);
//   - haproxy: HAProxy in tcp mode, the C reference, as the child.
//
// The child does no protocol work (no framing, no locks): the figures isolate the cost of
// waiting, waking and the system calls. -server-delay makes the fake server work before each
// answer, as PostgreSQL does, so that the relay goes to sleep between the two messages of a
// round trip. The same children relay real pgbench traffic as bench/pgbench's relay-DESIGN
// targets. Run from the repository root:
//
//	go run ./bench/relaydesigns -pairs 8 -rate 3000 -duration 10s -rounds 3 -server-delay 40us
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/pgquorum/pgquorum/bench/benchenv"
)

func main() {
	child := flag.String("child", "", "internal: run as the relay child with this design")
	listen := flag.String("listen", "", "internal: the child's listen address")
	server := flag.String("server", "", "internal: the fake server's address")
	pairs := flag.Int("pairs", 8, "client connections")
	rate := flag.Int("rate", 3000, "round trips per second, all connections together")
	duration := flag.Duration("duration", 10*time.Second, "length of one measurement")
	rounds := flag.Int("rounds", 3, "interleaved rounds; the median is reported")
	only := flag.String("designs", strings.Join(designs, ","), "comma-separated designs to measure")
	flag.DurationVar(&serverDelay, "server-delay", 0, "how long the fake server works (spinning) before each answer, like PostgreSQL running a query")
	flag.Parse()
	if *child != "" {
		log.Fatal(runChild(*child, *listen, *server)) // serves until it fails
	}
	designs = strings.Split(*only, ",")
	if err := run(*pairs, *rate, *duration, *rounds); err != nil {
		log.Fatal(err)
	}
}

var designs = []string{"goroutines", "goroutines-1p", "epoll", "epoll-spin", "epoll-locked", "io_uring", "io_uring-defer", "haproxy"}

const (
	requestSize = 64  // a pgbench -S Query is about this size
	answerSize  = 110 // RowDescription, DataRow, CommandComplete, ReadyForQuery
)

type measure struct{ cpuUS, syscalls, switches float64 }

func run(pairs, rate int, d time.Duration, rounds int) error {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.Close()
	go serveFake(srv)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	results := map[string][]measure{}
	for r := range rounds {
		for _, design := range designs {
			m, err := measureDesign(self, design, srv.Addr().String(), pairs, rate, d)
			if err != nil {
				return fmt.Errorf("%s: %w", design, err)
			}
			log.Printf("round %d %-14s %.1f µs CPU, %.1f syscalls, %.2f context switches per round trip", r+1, design, m.cpuUS, m.syscalls, m.switches)
			results[design] = append(results[design], m)
		}
	}
	fmt.Printf("\nRelay child per round trip, %d connections at %d round trips/s, server work %s per request, %s per run, median of %d rounds\n\n", pairs, rate, serverDelay, d, rounds)
	fmt.Println("| design | CPU µs | system calls | context switches |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for _, design := range designs {
		var cpu, sys, csw []float64
		for _, m := range results[design] {
			cpu, sys, csw = append(cpu, m.cpuUS), append(sys, m.syscalls), append(csw, m.switches)
		}
		fmt.Printf("| %s | %.1f | %.1f | %.2f |\n", design, median(cpu), median(sys), median(csw))
	}
	return nil
}

// serverDelay is the fake server's work per request (-server-delay).
var serverDelay time.Duration

// serveFake answers every request of requestSize bytes with answerSize bytes, after spinning
// for serverDelay.
func serveFake(ln net.Listener) {
	answer := bytes.Repeat([]byte{'a'}, answerSize)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, requestSize)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				for start := time.Now(); time.Since(start) < serverDelay; {
				}
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		}()
	}
}

func measureDesign(self, design, server string, pairs, rate int, d time.Duration) (measure, error) {
	port, err := benchenv.FreePort()
	if err != nil {
		return measure{}, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(self, "-child", design, "-listen", addr, "-server", server)
	if design == "haproxy" {
		// The C reference: HAProxy in tcp mode (default threads, as in bench/pgbench), as the child.
		dir, err := os.MkdirTemp("", "relaydesigns-haproxy")
		if err != nil {
			return measure{}, err
		}
		defer os.RemoveAll(dir)
		cfg, err := benchenv.HAProxyConfig(dir, port, server, 1000)
		if err != nil {
			return measure{}, err
		}
		cmd = exec.Command("haproxy", "-db", "-f", cfg)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return measure{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var conns []net.Conn
	for i := 0; i < pairs; i++ {
		var c net.Conn
		for try := 0; ; try++ {
			if c, err = net.Dial("tcp", addr); err == nil || try > 200 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return measure{}, err
		}
		defer c.Close()
		conns = append(conns, c)
	}
	pingPong(conns, rate/pairs, 500*time.Millisecond) // warm up
	pid := cmd.Process.Pid
	cpu0, _ := benchenv.CPUTime(pid)
	sw0 := contextSwitches(pid)
	stat := exec.Command("perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid), "-o", filepath.Join(os.TempDir(), "relaydesigns.perf"))
	if err := stat.Start(); err != nil {
		return measure{}, err
	}
	n := pingPong(conns, rate/pairs, d)
	_ = stat.Process.Signal(os.Interrupt)
	_ = stat.Wait()
	cpu1, _ := benchenv.CPUTime(pid)
	sw1 := contextSwitches(pid)
	data, _ := os.ReadFile(filepath.Join(os.TempDir(), "relaydesigns.perf"))
	var calls float64
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Split(line, ","); len(f) >= 3 && f[2] == "raw_syscalls:sys_enter" {
			calls, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if n == 0 {
		return measure{}, fmt.Errorf("no round trips")
	}
	return measure{cpuUS: float64(cpu1-cpu0) / float64(time.Microsecond) / float64(n),
		syscalls: calls / float64(n), switches: float64(sw1-sw0) / float64(n)}, nil
}

// pingPong runs request/answer round trips on every connection, each at perConn per second,
// for d, and returns how many were done.
func pingPong(conns []net.Conn, perConn int, d time.Duration) int {
	done := make(chan int)
	deadline := time.Now().Add(d)
	for _, c := range conns {
		go func() {
			req := bytes.Repeat([]byte{'q'}, requestSize)
			buf := make([]byte, answerSize)
			interval := time.Second / time.Duration(perConn)
			next := time.Now()
			count := 0
			for time.Now().Before(deadline) {
				if _, err := c.Write(req); err != nil {
					break
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					break
				}
				count++
				next = next.Add(interval)
				if wait := time.Until(next); wait > 0 {
					time.Sleep(wait)
				}
			}
			done <- count
		}()
	}
	total := 0
	for range conns {
		total += <-done
	}
	return total
}

// contextSwitches sums the voluntary and involuntary context switches of every thread of pid.
func contextSwitches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var total int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				v, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
				total += v
			} else if rest, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				v, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
				total += v
			}
		}
	}
	return total
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// runChild relays every connection accepted on listen to server with the named design. It
// returns only when accepting or dialing fails.
func runChild(design, listen, server string) error {
	if design == "goroutines-1p" {
		runtime.GOMAXPROCS(1)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	var loop *epollLoop
	var ring *uringLoop
	switch {
	case strings.HasPrefix(design, "epoll"):
		if loop, err = newEpollLoop(); err != nil {
			return err
		}
		loop.spin = design == "epoll-spin"
		loop.locked = design == "epoll-locked"
		go loop.run()
	case strings.HasPrefix(design, "io_uring"):
		flags := uint32(0)
		if design == "io_uring-defer" {
			flags = ioringSetupSingleIssuer | ioringSetupDeferTaskrun
		}
		ring = newURingLoop(flags)
		go ring.run()
		if err := <-ring.ready; err != nil {
			return err
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		s, err := net.Dial("tcp", server)
		if err != nil {
			return err
		}
		if ring != nil {
			if err := ring.add(c.(*net.TCPConn), s.(*net.TCPConn)); err != nil {
				return err
			}
			continue
		}
		if loop != nil {
			if err := loop.add(c.(*net.TCPConn), s.(*net.TCPConn)); err != nil {
				return err
			}
			continue
		}
		go copyRaw(c.(*net.TCPConn), s.(*net.TCPConn))
		go copyRaw(s.(*net.TCPConn), c.(*net.TCPConn))
	}
}

// copyRaw is the goroutine design: wait in Go's netpoller, read until EAGAIN and write with
// raw system calls, like pgquorum's relay_unix.go.
func copyRaw(src, dst *net.TCPConn) {
	rs, _ := src.SyscallConn()
	rd, _ := dst.SyscallConn()
	buf := make([]byte, 32<<10)
	var out []byte
	write := func(fd uintptr) bool {
		for len(out) > 0 {
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&out[0])), uintptr(len(out)))
			if e == syscall.EAGAIN {
				return false
			}
			if e != 0 {
				out = nil
				return true
			}
			out = out[n:]
		}
		return true
	}
	failed := false
	read := func(fd uintptr) bool {
		for {
			n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			if e == syscall.EAGAIN {
				return false
			}
			if e != 0 || n == 0 {
				failed = true
				return true
			}
			out = buf[:n]
			_ = rd.Write(write)
		}
	}
	for !failed {
		if rs.Read(read) != nil {
			return
		}
	}
}

// epollLoop is the event-loop design: the file descriptors are taken out of Go's netpoller
// (dup, then the net.Conn is closed) and watched by an epoll instance of our own; one goroutine
// waits in epoll_wait and relays inline.
type epollLoop struct {
	epfd   int
	peers  []atomic.Int32 // fd → 1 + the fd its bytes go to (0: none)
	files  []*os.File     // keep the duplicated descriptors open
	spin   bool           // poll without blocking for a while before sleeping in epoll_wait
	locked bool           // wait with a raw system call on a locked thread, keeping the P
}

// wait returns the next ready events.
func (l *epollLoop) wait(events []syscall.EpollEvent) int {
	if l.spin {
		for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
			n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
			if e == 0 && n > 0 {
				return int(n)
			}
		}
	}
	if l.locked {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), ^uintptr(0), 0, 0)
		if e != 0 {
			return 0 // EINTR (the runtime's preemption signal)
		}
		return int(n)
	}
	n, err := syscall.EpollWait(l.epfd, events, -1)
	if err != nil {
		return 0 // EINTR
	}
	return n
}

func newEpollLoop() (*epollLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &epollLoop{epfd: epfd, peers: make([]atomic.Int32, 1<<16)}, nil
}

// detach takes c's descriptor out of Go's netpoller and returns a non-blocking duplicate.
func (l *epollLoop) detach(c *net.TCPConn) (int, error) {
	f, err := c.File()
	if err != nil {
		return 0, err
	}
	_ = c.Close()
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		return 0, err
	}
	l.files = append(l.files, f)
	return fd, nil
}

func (l *epollLoop) add(client, server *net.TCPConn) error {
	cfd, err := l.detach(client)
	if err != nil {
		return err
	}
	sfd, err := l.detach(server)
	if err != nil {
		return err
	}
	if cfd >= len(l.peers) || sfd >= len(l.peers) {
		return fmt.Errorf("descriptor %d out of range", max(cfd, sfd))
	}
	l.peers[cfd].Store(int32(sfd) + 1) // before the fds are registered
	l.peers[sfd].Store(int32(cfd) + 1)
	for _, fd := range []int{cfd, sfd} {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | (1 << 31) /* EPOLLET */, Fd: int32(fd)}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return err
		}
	}
	return nil
}

func (l *epollLoop) run() {
	if l.locked {
		runtime.LockOSThread()
	}
	events := make([]syscall.EpollEvent, 64)
	buf := make([]byte, 32<<10)
	for {
		n := l.wait(events)
		for _, ev := range events[:n] {
			src := int(ev.Fd)
			dst := int(l.peers[src].Load()) - 1
			if dst < 0 {
				continue
			}
			for {
				k, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(src), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
				if e != 0 || k == 0 {
					break // EAGAIN (or the peer left: the benchmark ends)
				}
				for out := buf[:k]; len(out) > 0; {
					w, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(dst), uintptr(unsafe.Pointer(&out[0])), uintptr(len(out)))
					if e != 0 && e != syscall.EAGAIN {
						break
					}
					if e == 0 {
						out = out[w:]
					}
				}
			}
		}
	}
}

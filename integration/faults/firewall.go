package faults

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Firewall makes network partitions on loopback with iptables, between
// processes told apart by their group id.
//
// Every proxy process runs as root with a group id of its own (ProxyGroup); the
// PostgreSQL servers run as the postgres user. A rule drops the TCP packets a
// given group sends to a given port ("-m owner --gid-owner G -p tcp --dport P
// -j DROP"), so the test can cut one proxy from one PostgreSQL node or from
// another proxy's Raft port while replication between the PostgreSQL nodes,
// the other proxies and the test's own clients go on untouched. Each proxy
// sends Raft messages only on the connections it dialed, and the proxies dial
// PostgreSQL, so dropping what a group sends to a port cuts the traffic both
// ways, as a real partition does (packets vanish, nothing is refused).
//
// Why iptables and not network namespaces: the harness runs everything on
// 127.0.0.1 with free ports; namespaces would need veth pairs, addresses and
// routes for every process and a PostgreSQL cluster listening on them. Owner
// matching keeps the harness as it is and the rules small.
//
// Every rule is ours: they live in a chain of our own (one per test process,
// named with its pid), reached from OUTPUT by a single jump that matches only
// our group ids, and they match only those groups and our ports. Close
// removes the jump and the chain, also when the test failed; a chain left by a
// test process that was killed is removed by the next NewFirewall (its group
// ids belong to no running process, so it matched nothing meanwhile).
//
// Owner: the test goroutine.
type Firewall struct {
	iptables string
	chain    string
	lo, hi   uint32 // our group ids
	mu       sync.Mutex
	rules    [][]string
	closed   bool
}

// chainPrefix names our chains: PGQF<pid>.
const chainPrefix = "PGQF"

// maxProxies is how many proxy group ids one test process reserves.
const maxProxies = 8

// NewFirewall prepares an empty chain for this test process. It fails when
// iptables is missing or not usable (the caller fails the test under CI).
func NewFirewall() (*Firewall, error) {
	path, err := exec.LookPath("iptables")
	if err != nil {
		return nil, fmt.Errorf("iptables not found: %w", err)
	}
	base := groupBase(os.Getpid())
	f := &Firewall{iptables: path, chain: fmt.Sprintf("%s%d", chainPrefix, os.Getpid()), lo: base + 1, hi: base + maxProxies}
	f.removeStale()
	if err := f.run("-N", f.chain); err != nil {
		return nil, err
	}
	if err := f.run("-I", "OUTPUT", "1", "-m", "owner", "--gid-owner", fmt.Sprintf("%d-%d", f.lo, f.hi), "-j", f.chain); err != nil {
		_ = f.run("-X", f.chain)
		return nil, err
	}
	return f, nil
}

// groupBase is the group id below this test process's proxy group ids: a
// range no system group uses, different for concurrent test processes.
func groupBase(pid int) uint32 { return 61000 + uint32(pid%400)*10 }

// ProxyGroup is the group id proxy id runs with (1 <= id <= 8).
func (f *Firewall) ProxyGroup(id uint64) uint32 { return f.lo + uint32(id) - 1 }

// ProxyAttr gives proxy id its own group id (for proxies.Options.SysProcAttr).
func (f *Firewall) ProxyAttr(id uint64) *syscall.SysProcAttr {
	if id < 1 || id > maxProxies {
		panic(fmt.Sprintf("faults: proxy id %d outside 1..%d", id, maxProxies))
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: f.ProxyGroup(id), Groups: []uint32{}}}
}

// Drop makes the packets proxy sends to port vanish: a silent partition
// (connections hang until their timeouts).
func (f *Firewall) Drop(proxy uint64, port int) error {
	return f.add(proxy, port, "DROP")
}

// Reject answers the packets proxy sends to port with a TCP reset: a
// partition that the sender notices at once (connection refused or reset), as
// a host that is gone, or a firewall that rejects, looks.
func (f *Firewall) Reject(proxy uint64, port int) error {
	return f.add(proxy, port, "REJECT", "--reject-with", "tcp-reset")
}

func (f *Firewall) add(proxy uint64, port int, target ...string) error {
	rule := []string{"-m", "owner", "--gid-owner", strconv.FormatUint(uint64(f.ProxyGroup(proxy)), 10),
		"-p", "tcp", "--dport", strconv.Itoa(port), "-j"}
	rule = append(rule, target...)
	if err := f.run(append([]string{"-A", f.chain}, rule...)...); err != nil {
		return err
	}
	f.mu.Lock()
	f.rules = append(f.rules, rule)
	f.mu.Unlock()
	return nil
}

// Rules lists the rules in place, for logs.
func (f *Firewall) Rules() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.rules))
	for i, r := range f.rules {
		out[i] = strings.Join(r, " ")
	}
	return out
}

// Heal removes every rule: the network is whole again.
func (f *Firewall) Heal() error {
	f.mu.Lock()
	f.rules = nil
	f.mu.Unlock()
	return f.run("-F", f.chain)
}

// Close removes the jump from OUTPUT and the chain. Safe to call twice.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	f.rules = nil
	err1 := f.run("-D", "OUTPUT", "-m", "owner", "--gid-owner", fmt.Sprintf("%d-%d", f.lo, f.hi), "-j", f.chain)
	err2 := f.run("-F", f.chain)
	err3 := f.run("-X", f.chain)
	if err1 != nil || err2 != nil || err3 != nil {
		return fmt.Errorf("remove firewall chain %s: %v; %v; %v", f.chain, err1, err2, err3)
	}
	return nil
}

// Leftover reports the rules of this test process still in iptables (none
// after Close), for the test to check that it cleaned up.
func (f *Firewall) Leftover() ([]string, error) {
	out, err := exec.Command(f.iptables, "-w", "5", "-S").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables -S: %w", err)
	}
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, f.chain) {
			left = append(left, line)
		}
	}
	return left, nil
}

// removeStale deletes the chains of test processes that no longer run.
func (f *Firewall) removeStale() {
	out, err := exec.Command(f.iptables, "-w", "5", "-S", "OUTPUT").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "-A" || !strings.HasPrefix(fields[len(fields)-1], chainPrefix) {
			continue
		}
		chain := fields[len(fields)-1]
		pid, err := strconv.Atoi(strings.TrimPrefix(chain, chainPrefix))
		if err != nil || pid == os.Getpid() || processRuns(pid) {
			continue
		}
		_ = f.run(append([]string{"-D"}, fields[1:]...)...)
		_ = f.run("-F", chain)
		_ = f.run("-X", chain)
	}
}

func processRuns(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func (f *Firewall) run(args ...string) error {
	out, err := exec.Command(f.iptables, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

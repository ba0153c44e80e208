package faults

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is what a client knows about one operation once it returned.
type Outcome int

const (
	// Ok: the server answered with success.
	Ok Outcome = iota
	// Failed: the operation certainly did not take effect (57P03 after
	// hold.timeout, 40001 "not committed", 25006 read-only). It is left out of
	// the history.
	Failed
	// Unknown: the operation may or may not have taken effect (08007, a lost
	// connection, a timeout). A write with an unknown outcome may take effect
	// at any time after its call, so the checker gives it no return time.
	Unknown
)

// Op is one operation of the register workload: a read or a write of one key.
// Times are nanoseconds since the history began (monotonic clock).
type Op struct {
	Client int
	Key    int
	Write  bool
	Value  int64 // written, or read (valid when Outcome is Ok)
	Call   int64
	Return int64
	// Outcome of the operation; reads that did not succeed are not recorded.
	Outcome Outcome
	// Port is inet_server_port() of the PostgreSQL server that answered (Ok only).
	Port int
}

// History collects the operations of concurrent clients. Safe for concurrent
// use.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
	kills map[int]int64 // PostgreSQL port -> history time of its first kill -9 (NoteKill)
}

// NewHistory starts a history now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the time since the history began, in nanoseconds.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// NoteKill records that the PostgreSQL server on port is about to be killed (kill -9 of its
// postmaster), before the kill. See WithoutDyingServerReads.
func (h *History) NoteKill(port int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kills == nil {
		h.kills = map[int]int64{}
	}
	if _, ok := h.kills[port]; !ok {
		h.kills[port] = h.Now()
	}
}

// WithoutDyingServerReads returns the operations to judge and the reads left out: those a
// PostgreSQL server answered after it was killed. PostgreSQL itself lets such a read see a
// write that the cluster then loses: when the postmaster dies, a backend waiting for
// synchronous replication of its commit stops waiting and makes the commit visible locally
// (without answering its client), and a backend still running a read sees it
// (docs/architecture.md, "A limit of PostgreSQL"). Every other read is judged, including reads
// of a server that is cut off, stopped or demoted, and every write.
func (h *History) WithoutDyingServerReads() (judged []Op, left []Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, op := range h.ops {
		killedAt, killed := h.kills[op.Port]
		if !op.Write && op.Outcome == Ok && killed && op.Return > killedAt {
			left = append(left, op)
			continue
		}
		judged = append(judged, op)
	}
	return judged, left
}

// At turns a history time back into a wall-clock time.
func (h *History) At(ns int64) time.Time { return h.start.Add(time.Duration(ns)) }

// Since is the history time of t.
func (h *History) Since(t time.Time) int64 { return int64(t.Sub(h.start)) }

// Add records one returned operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// Ops returns a copy of the operations so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// registerInput is what the porcupine model sees of an operation.
type registerInput struct {
	key   int
	write bool
	value int64
	port  int // the server that answered (0 when none did): shown in porcupine's view
}

// registerModel is a set of registers, one per key, each starting at 0:
// a read returns the last value written. The history is partitioned by key,
// so each partition's state is one int64.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[int][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(registerInput).key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]int, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(registerInput)
		if in.write {
			return true, in.value
		}
		return output.(int64) == state.(int64), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(registerInput)
		if in.write {
			return fmt.Sprintf("write(k%d, %d) on :%d", in.key, in.value, in.port)
		}
		return fmt.Sprintf("read(k%d) -> %d on :%d", in.key, output.(int64), in.port)
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.(int64)) },
}

// Linearizability is the verdict of CheckLinearizable.
type Linearizability struct {
	Result porcupine.CheckResult // Ok, Illegal, or Unknown (the search timed out)
	Ops    int                   // operations checked
	Reads  int
	Writes int
	// UnknownWrites are writes whose outcome the client could not know.
	UnknownWrites int
	info          porcupine.LinearizationInfo
}

func (l Linearizability) String() string {
	return fmt.Sprintf("%s over %d operations (%d reads, %d writes of which %d with an unknown outcome)",
		l.Result, l.Ops, l.Reads, l.Writes, l.UnknownWrites)
}

// CheckLinearizable checks the register history with porcupine: is there one
// order of the operations, consistent with real time (an operation that
// returned before another was called comes first), in which every read returns
// the latest write? Failed operations are left out; writes with an unknown
// outcome may take effect at any time after their call, or never.
func CheckLinearizable(ops []Op, timeout time.Duration) Linearizability {
	var history []porcupine.Operation
	v := Linearizability{}
	for _, op := range ops {
		if op.Outcome == Failed || (!op.Write && op.Outcome != Ok) {
			continue
		}
		ret := op.Return
		if op.Outcome == Unknown {
			ret = math.MaxInt64
			v.UnknownWrites++
		}
		if op.Write {
			v.Writes++
		} else {
			v.Reads++
		}
		history = append(history, porcupine.Operation{
			ClientId: op.Client,
			Input:    registerInput{key: op.Key, write: op.Write, value: op.Value, port: op.Port},
			Call:     op.Call,
			Output:   op.Value,
			Return:   ret,
		})
	}
	v.Ops = len(history)
	v.Result, v.info = porcupine.CheckOperationsVerbose(registerModel, history, timeout)
	return v
}

// Visualize writes porcupine's HTML view of the checked history to path (to
// look at an Illegal verdict).
func (l Linearizability) Visualize(path string) error {
	return porcupine.VisualizePath(registerModel, l.info, path)
}

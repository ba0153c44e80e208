package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Peer calls: a small request/reply service between the members of one
// cluster, carried by the same authenticated transport as Raft (mutual TLS,
// the sender's id and role from its certificate). Other packages use it for
// what must cross proxies but is not replicated state: a cancel request that
// reached the wrong proxy, a learner asking a voter for a role's verifier.
//
// A service registers a CallHandler under a name (HandleCalls); a member calls
// it on another member with Call. The handler learns who called (the
// authenticated Sender) and decides what that caller may ask. Calls are best
// effort, like every frame of the transport: a call whose request or reply is
// lost fails when the caller's context ends (Call bounds a context without a
// deadline by DefaultCallTimeout).
//
// Limits: a request or reply payload is at most MaxCallPayload bytes; at most
// maxRunningCalls handlers run at once on a node (a call beyond that is
// answered "busy" at once); a handler gets callHandlerTimeout. Replies are
// accepted only from the member the call went to.

// CallHandler answers one call. from is the authenticated caller; the
// returned error's text reaches the caller as a *RemoteCallError. A handler
// must respect ctx (it ends when the node closes or after
// callHandlerTimeout) and must be safe for concurrent use.
type CallHandler func(ctx context.Context, from Sender, payload []byte) ([]byte, error)

const (
	// MaxCallPayload bounds the payload of a call or a reply.
	MaxCallPayload = 64 << 10
	// DefaultCallTimeout bounds a Call whose context has no deadline.
	DefaultCallTimeout = 5 * time.Second
	maxServiceName     = 64
	maxCallError       = 1024
	maxRunningCalls    = 64
	callHandlerTimeout = 5 * time.Second
)

// Errors of Call.
var (
	// ErrCallUndeliverable: the request could not be queued (no address for
	// the member, its queue is full, or the node stopped).
	ErrCallUndeliverable = errors.New("peer call could not be sent")
	// ErrCallToSelf: a node does not call itself.
	ErrCallToSelf = errors.New("peer call to this node itself")
)

// RemoteCallError is the error a handler on the called member returned.
type RemoteCallError struct {
	Node    uint64
	Service string
	Message string
}

func (e *RemoteCallError) Error() string {
	return fmt.Sprintf("node %d, service %q: %s", e.Node, e.Service, e.Message)
}

// PeerCall is a call or its reply on the wire.
type PeerCall struct {
	// ID is chosen by the caller; the reply carries the request's ID.
	ID    uint64
	Reply bool
	// Service names the handler (request only).
	Service string
	Payload []byte
	// Err is the handler's error (reply only; "" = success).
	Err string
}

// validate checks the limits of a call or reply.
func (c PeerCall) validate() error {
	switch {
	case len(c.Payload) > MaxCallPayload:
		return fmt.Errorf("payload of %d bytes exceeds %d", len(c.Payload), MaxCallPayload)
	case len(c.Service) > maxServiceName:
		return fmt.Errorf("service name of %d bytes exceeds %d", len(c.Service), maxServiceName)
	case len(c.Err) > maxCallError:
		return fmt.Errorf("error text of %d bytes exceeds %d", len(c.Err), maxCallError)
	case !c.Reply && c.Service == "":
		return errors.New("request without a service name")
	}
	return nil
}

// callTable holds the registered services and the calls waiting for a reply.
// Owner: its mutex; it is shared by the callers, the transport's reader
// goroutines (DeliverCall) and the handler goroutines.
type callTable struct {
	mu       sync.Mutex
	handlers map[string]CallHandler
	pending  map[uint64]pendingCall
	nextID   uint64
	running  int
	wg       sync.WaitGroup     // running handlers
	ctx      context.Context    // ends when the node stops
	stop     context.CancelFunc // called by the node's shutdown
}

// pendingCall is a call waiting for its reply from member to.
type pendingCall struct {
	to    uint64
	reply chan PeerCall // buffered (1)
}

func newCallTable() *callTable {
	ctx, stop := context.WithCancel(context.Background())
	return &callTable{
		handlers: make(map[string]CallHandler),
		pending:  make(map[uint64]pendingCall),
		ctx:      ctx,
		stop:     stop,
	}
}

// HandleCalls registers h as the handler of service (replacing an earlier
// one). Calls to a service without a handler are answered with an error.
func (n *Node) HandleCalls(service string, h CallHandler) {
	n.calls.mu.Lock()
	defer n.calls.mu.Unlock()
	n.calls.handlers[service] = h
}

// Call asks member `to` to run service with payload and returns the reply's
// payload. It fails with ErrCallUndeliverable when the request cannot be
// queued, with a *RemoteCallError when the handler failed, and with ctx's
// error when no reply came in time (the request or reply was lost, or the
// member is down). A call without a deadline is bounded by
// DefaultCallTimeout.
func (n *Node) Call(ctx context.Context, to uint64, service string, payload []byte) ([]byte, error) {
	if to == n.cfg.NodeID {
		return nil, ErrCallToSelf
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	req := PeerCall{Service: service, Payload: payload}
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("peer call %q to node %d: %w", service, to, err)
	}
	t := n.calls
	t.mu.Lock()
	t.nextID++
	req.ID = t.nextID
	wait := pendingCall{to: to, reply: make(chan PeerCall, 1)}
	t.pending[req.ID] = wait
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.pending, req.ID)
		t.mu.Unlock()
	}()

	if err := n.transport.SendCall(to, req); err != nil {
		return nil, fmt.Errorf("peer call %q to node %d: %w: %w", service, to, ErrCallUndeliverable, err)
	}
	select {
	case rep := <-wait.reply:
		if rep.Err != "" {
			return nil, &RemoteCallError{Node: to, Service: service, Message: rep.Err}
		}
		return rep.Payload, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("peer call %q to node %d: no reply: %w", service, to, ctx.Err())
	case <-t.ctx.Done():
		return nil, fmt.Errorf("peer call %q to node %d: %w", service, to, ErrStopped)
	}
}

// deliverCall handles a call or reply that the transport received from an
// authenticated member. It never blocks: a request runs in its own goroutine
// (or is answered "busy"), a reply goes to its waiting caller or is dropped.
func (n *Node) deliverCall(from Sender, c PeerCall) {
	if err := c.validate(); err != nil {
		n.refuse("peer call", from, err)
		return
	}
	t := n.calls
	if c.Reply {
		t.mu.Lock()
		wait, ok := t.pending[c.ID]
		t.mu.Unlock()
		// A reply is believed only from the member the call went to; a late
		// or forged one is dropped.
		if !ok || wait.to != from.ID {
			return
		}
		select {
		case wait.reply <- c:
		default:
		}
		return
	}

	t.mu.Lock()
	h, known := t.handlers[c.Service]
	busy := t.running >= maxRunningCalls
	stopped := t.ctx.Err() != nil
	if known && !busy && !stopped {
		t.running++
		t.wg.Add(1)
	}
	t.mu.Unlock()
	switch {
	case stopped:
		return
	case !known:
		n.replyCall(from.ID, c, nil, fmt.Errorf("no service %q on this node", c.Service))
		return
	case busy:
		n.replyCall(from.ID, c, nil, errors.New("busy: too many calls running"))
		return
	}
	go func() {
		defer func() {
			t.mu.Lock()
			t.running--
			t.mu.Unlock()
			t.wg.Done()
		}()
		out, err := n.runHandler(h, from, c)
		n.replyCall(from.ID, c, out, err)
	}()
}

// runHandler runs one handler with its time bound; a panic becomes an error
// answer instead of ending the process.
func (n *Node) runHandler(h CallHandler, from Sender, c PeerCall) (out []byte, err error) {
	ctx, cancel := context.WithTimeout(n.calls.ctx, callHandlerTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("peer call handler panicked", "service", c.Service, "from", from.ID, "panic", r)
			out, err = nil, errors.New("internal error")
		}
	}()
	return h(ctx, from, c.Payload)
}

// replyCall sends the answer to request c back to its caller.
func (n *Node) replyCall(to uint64, c PeerCall, payload []byte, err error) {
	rep := PeerCall{ID: c.ID, Reply: true, Payload: payload}
	if err != nil {
		rep.Payload = nil
		rep.Err = err.Error()
		if len(rep.Err) > maxCallError {
			rep.Err = rep.Err[:maxCallError]
		}
	}
	if verr := rep.validate(); verr != nil {
		rep = PeerCall{ID: c.ID, Reply: true, Err: "reply too large: " + verr.Error()}
	}
	if serr := n.transport.SendCall(to, rep); serr != nil {
		n.log.Debug("peer call reply not sent", "service", c.Service, "to", to, "err", serr)
	}
}

// stopCalls ends the running handlers' contexts and every waiting Call, and
// waits for the handlers. Called by the node's shutdown, before the transport
// closes.
func (t *callTable) stopCalls() {
	t.stop()
	t.wg.Wait()
}

package main

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The io_uring design: one goroutine, locked to its thread, owns an io_uring instance and
// relays every connection pair through it. Each direction keeps one receive in flight; when it
// completes, the loop queues a send of those bytes to the peer linked to the next receive on
// the same buffer (the send posts no completion when it succeeds), and submits them in the same
// io_uring_enter call that waits for the next completion: one system call per message, where
// a readiness loop makes three (wait, read, write). The wait is a raw system call that keeps
// the goroutine's P (like epoll-locked), so the runtime never hands it off.

const (
	sysIOUringSetup = 425
	sysIOUringEnter = 426

	ioringOffSQRing = 0
	ioringOffSQEs   = 0x10000000

	ioringEnterGetEvents = 1 << 0
	ioringFeatSingleMmap = 1 << 0

	ioringSetupSingleIssuer = 1 << 12
	ioringSetupDeferTaskrun = 1 << 13

	iosqeIOLink          = 1 << 2
	iosqeCQESkipSuccess  = 1 << 6
	ioringOpRead         = 22
	ioringOpSend         = 26
	ioringOpRecv         = 27
	msgWaitAll           = 0x100
	wakeUserData         = ^uint64(0)
	ringEntries          = 4096
	relayBufSize         = 32 << 10
	directionFromServer  = 1 // user data: pair index << directionBitsPerPair | direction
	directionBitsPerPair = 1
)

type ioUringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

type ioUringSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, opFlags  uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFDIn    int32
	addr3, pad    uint64
}

type ioUringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// uringPair is one relayed connection pair: fds[0] the client, fds[1] the server, and one
// buffer per direction (bufs[0] holds bytes read from the client).
type uringPair struct {
	fds  [2]int32
	bufs [2][]byte
	keep [2]any // the *os.File values that own the descriptors
}

type uringLoop struct {
	fd             int
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []ioUringSQE
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []ioUringCQE
	toSubmit       uint32
	wakeFD         int
	wakeBuf        [8]byte
	mu             sync.Mutex
	pending        []*uringPair // added by the accept goroutine, taken by the loop
	pairs          []*uringPair
	ready          chan error
	flags          uint32
}

func newURingLoop(flags uint32) *uringLoop {
	return &uringLoop{ready: make(chan error, 1), flags: flags}
}

// setup creates the ring on the calling thread (DEFER_TASKRUN wants the issuer's thread).
func (l *uringLoop) setup() error {
	p := ioUringParams{flags: l.flags}
	fd, _, errno := syscall.Syscall(sysIOUringSetup, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_setup: %w", errno)
	}
	l.fd = int(fd)
	if p.features&ioringFeatSingleMmap == 0 {
		return fmt.Errorf("io_uring without IORING_FEAT_SINGLE_MMAP")
	}
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(ioUringCQE{})))
	ring, err := syscall.Mmap(l.fd, ioringOffSQRing, max(sqSize, cqSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap ring: %w", err)
	}
	sqes, err := syscall.Mmap(l.fd, ioringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(ioUringSQE{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap sqes: %w", err)
	}
	base := unsafe.Pointer(&ring[0])
	l.sqHead = (*uint32)(unsafe.Add(base, p.sqOff.head))
	l.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	l.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	l.sqArray = unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff.array)), p.sqEntries)
	l.sqes = unsafe.Slice((*ioUringSQE)(unsafe.Pointer(&sqes[0])), p.sqEntries)
	l.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	l.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	l.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	l.cqes = unsafe.Slice((*ioUringCQE)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	wake, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return fmt.Errorf("eventfd: %w", errno)
	}
	l.wakeFD = int(wake)
	l.queueWakeRead()
	return nil
}

// queue appends one SQE; the loop submits everything queued in its next io_uring_enter.
func (l *uringLoop) queue(sqe ioUringSQE) {
	tail := atomic.LoadUint32(l.sqTail)
	for tail-atomic.LoadUint32(l.sqHead) == uint32(len(l.sqes)) {
		// The submission queue is full: submit without waiting.
		n, _, errno := syscall.RawSyscall6(sysIOUringEnter, uintptr(l.fd), uintptr(l.toSubmit), 0, 0, 0, 0)
		if errno == 0 {
			l.toSubmit -= uint32(n)
		}
	}
	idx := tail & l.sqMask
	l.sqes[idx] = sqe
	l.sqArray[idx] = idx
	atomic.StoreUint32(l.sqTail, tail+1)
	l.toSubmit++
}

func (l *uringLoop) queueWakeRead() {
	l.queue(ioUringSQE{opcode: ioringOpRead, fd: int32(l.wakeFD), addr: uint64(uintptr(unsafe.Pointer(&l.wakeBuf[0]))), len: 8, off: ^uint64(0), userData: wakeUserData})
}

func (l *uringLoop) queueRecv(pairIdx int, dir int) {
	p := l.pairs[pairIdx]
	l.queue(ioUringSQE{opcode: ioringOpRecv, fd: p.fds[dir], addr: uint64(uintptr(unsafe.Pointer(&p.bufs[dir][0]))), len: uint32(len(p.bufs[dir])),
		userData: uint64(pairIdx)<<directionBitsPerPair | uint64(dir)})
}

// queueForward sends n bytes read in direction dir to the peer, then receives again on the
// same buffer (linked: the receive starts only after the send).
func (l *uringLoop) queueForward(pairIdx, dir, n int) {
	p := l.pairs[pairIdx]
	l.queue(ioUringSQE{opcode: ioringOpSend, flags: iosqeIOLink | iosqeCQESkipSuccess, fd: p.fds[1-dir], addr: uint64(uintptr(unsafe.Pointer(&p.bufs[dir][0]))),
		len: uint32(n), opFlags: msgWaitAll, userData: uint64(pairIdx)<<directionBitsPerPair | uint64(dir)})
	l.queueRecv(pairIdx, dir)
}

func (l *uringLoop) add(client, server *net.TCPConn) error {
	p := &uringPair{}
	for i, c := range []*net.TCPConn{client, server} {
		f, err := c.File() // a blocking duplicate, out of Go's netpoller
		if err != nil {
			return err
		}
		_ = c.Close()
		if err := syscall.SetNonblock(int(f.Fd()), true); err != nil {
			return err
		}
		p.fds[i], p.keep[i] = int32(f.Fd()), f
		p.bufs[i] = make([]byte, relayBufSize)
	}
	l.mu.Lock()
	l.pending = append(l.pending, p)
	l.mu.Unlock()
	one := uint64(1)
	_, err := syscall.Write(l.wakeFD, (*[8]byte)(unsafe.Pointer(&one))[:])
	return err
}

// run is the event loop; it sets the ring up on its own locked thread, then never returns.
func (l *uringLoop) run() {
	runtime.LockOSThread()
	if err := l.setup(); err != nil {
		l.ready <- err
		return
	}
	l.ready <- nil
	for {
		n, _, errno := syscall.RawSyscall6(sysIOUringEnter, uintptr(l.fd), uintptr(l.toSubmit), 1, ioringEnterGetEvents, 0, 0)
		if errno != 0 && errno != syscall.EINTR && errno != syscall.EAGAIN && errno != syscall.EBUSY {
			panic(fmt.Sprintf("io_uring_enter: %v", errno))
		}
		if errno == 0 {
			l.toSubmit -= uint32(n)
		}
		head := atomic.LoadUint32(l.cqHead)
		tail := atomic.LoadUint32(l.cqTail)
		for ; head != tail; head++ {
			cqe := l.cqes[head&l.cqMask]
			l.complete(cqe)
		}
		atomic.StoreUint32(l.cqHead, head)
	}
}

func (l *uringLoop) complete(cqe ioUringCQE) {
	if cqe.userData == wakeUserData {
		l.mu.Lock()
		newPairs := l.pending
		l.pending = nil
		l.mu.Unlock()
		for _, p := range newPairs {
			l.pairs = append(l.pairs, p)
			l.queueRecv(len(l.pairs)-1, 0)
			l.queueRecv(len(l.pairs)-1, directionFromServer)
		}
		l.queueWakeRead()
		return
	}
	pairIdx, dir := int(cqe.userData>>directionBitsPerPair), int(cqe.userData&1)
	if cqe.res <= 0 {
		return // the peer left, or a failed send cancelled the linked receive: the pair ends
	}
	l.queueForward(pairIdx, dir, int(cqe.res))
}

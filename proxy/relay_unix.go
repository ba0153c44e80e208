//go:build unix

package proxy

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

const rawIOSupported = true

// Relay I/O on plain TCP goes through syscall.RawConn with the read and write system calls made
// by the callbacks below. The sockets are non-blocking, so each call returns at once; making it
// with RawSyscall (no entersyscall) means the runtime never hands this goroutine's P to another
// thread during it. Measured on a 2-vCPU VM, the ordinary path (a P retaken by sysmon during a
// loopback write, a thread woken to take it, sysmon polling every 20 µs) added tens of
// microseconds to every round trip.

// readReady is the syscall.RawConn.Read callback and the body of the relay loop on plain TCP:
// it reads what the socket has into a pooled buffer, forwards it, gives the buffer back, and
// reads again until the socket says EAGAIN; then it returns false and RawConn.Read parks the
// goroutine until the socket is readable, with no buffer held.
//
// It always reads until EAGAIN before waiting, even after a read that did not fill the buffer:
// a FIN (or reset) that arrived together with the last bytes raises no readiness event of its
// own, so only another read sees it. It returns true ("leave RawConn.Read") on errors (kept in
// r.runErr) and after a full buffer, so that runRaw calls RawConn.Read again, which notices a
// connection closed meanwhile by another goroutine.
func (r *relay) readReady(fd uintptr) bool {
	for {
		bufp := relayBuffers.Get().(*[]byte)
		buf := *bufp
		p := r.f.fill(buf)
		free := buf[p:] // never empty: pending is at most streamThreshold < relayBufferSize
		var n uintptr
		var errno syscall.Errno
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&free[0])), uintptr(len(free)))
			if errno != syscall.EINTR {
				break
			}
		}
		switch {
		case errno == syscall.EAGAIN:
			r.f.keep(buf[:p])
			relayBuffers.Put(bufp)
			return false
		case errno != 0:
			r.f.keep(buf[:p])
			relayBuffers.Put(bufp)
			r.runErr = &relayReadError{os.NewSyscallError("read", errno)}
			return true
		case n == 0:
			r.f.keep(buf[:p])
			relayBuffers.Put(bufp)
			r.runErr = &relayReadError{io.EOF}
			return true
		}
		if !r.fromBackend {
			r.s.srv.counters.bytesFromClients.Add(uint64(n))
		}
		err := r.forwardFunc(buf[:p+int(n)])
		relayBuffers.Put(bufp)
		if err != nil {
			r.runErr = err
			return true
		}
		if int(n) == len(free) {
			return true
		}
	}
}

// writeReady is the syscall.RawConn.Write callback: it writes r.writeBuf until it is empty, or
// returns false on EAGAIN so the poller waits until the socket is writable again.
func (r *relay) writeReady(fd uintptr) bool {
	for len(r.writeBuf) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.writeBuf[0])), uintptr(len(r.writeBuf)))
		switch errno {
		case 0:
			r.writeBuf = r.writeBuf[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			r.writeErr = os.NewSyscallError("write", errno)
			return true
		}
	}
	return true
}

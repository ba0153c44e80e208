//go:build !unix

package proxy

const rawIOSupported = false

// readReady and writeReady are not used where raw socket I/O is not supported (every read and
// write goes through net.Conn).
func (r *relay) readReady(fd uintptr) bool  { return true }
func (r *relay) writeReady(fd uintptr) bool { return true }

//go:build !race

package proxy

// raceEnabled: the race detector multiplies memory use, so memory targets are not asserted.
const raceEnabled = false

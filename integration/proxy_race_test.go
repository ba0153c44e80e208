//go:build race

package integration

// proxyRaceEnabled is true under the race detector, whose sync.Pool drops pooled items at
// random, so allocation bounds that rely on pooling do not hold.
const proxyRaceEnabled = true

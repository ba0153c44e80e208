// Package faults is pgquorum's fault-injection suite (issue 10), run by `go test`
// like every other test: a real PostgreSQL quorum cluster, three `pgquorum run`
// processes, clients through every proxy, and faults injected from outside.
package faults

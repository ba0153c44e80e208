// Package faults is pgquorum's fault-injection suite (issue 10), run by
// `go test ./integration/faults` like every other test (as root: the partitions
// need iptables): a real PostgreSQL 15 quorum cluster, three `pgquorum run`
// processes, clients through every proxy, and faults injected from outside,
// as Jepsen would.
//
// # The checks
//
// The workload (workload.go) reads and writes a few registers through every
// proxy. Every operation is recorded with its call and return times and its
// outcome (history.go): Ok; Failed when the answer proves it never ran (57P03,
// 40001, 25006); Unknown otherwise (08007, a lost connection, a timeout). Two
// checkers judge a run:
//
//   - CheckLinearizable (github.com/anishathalye/porcupine): is there one order
//     of the operations, consistent with real time, in which every read returns
//     the latest write? Unknown writes may take effect at any time after their
//     call, or never. A stale read served by an old primary after the new one
//     acknowledged a write is Illegal. Reads a PostgreSQL server answered after
//     the test killed it (kill -9) are left out and logged: PostgreSQL itself
//     lets them see a commit whose synchronous wait the postmaster's death cut
//     (History.WithoutDyingServerReads, docs/architecture.md).
//   - VerifyAcknowledged (acked.go): each write also logs its unique value in
//     a table; afterwards every acknowledged value must be on the primary (and
//     on its synchronous standby) exactly once, nothing twice, nothing that was
//     never written.
//
// Each checker has a negative control (checkers_test.go): fed a known-bad
// history, it must fail.
//
// # The faults
//
//   - Network partitions with iptables (firewall.go): each proxy runs with a
//     group id of its own, PostgreSQL runs as the postgres user, and rules
//     match the group and a destination port, so one proxy can be cut from a
//     PostgreSQL node or from the other proxies while replication goes on.
//     Every rule is in a chain of the test process's own and is removed at the
//     end, also on failure. Network namespaces were not used: they would need
//     veth pairs and addresses for every process and a PostgreSQL cluster
//     listening on them, where owner matching keeps the harness on 127.0.0.1.
//   - SIGSTOP and SIGCONT of every process of the primary (localcluster).
//   - kill -9 of the Raft leader proxy at each point of a failover, using the
//     coordinator's failpoints (coordinator/failpoint_on.go, compiled in only
//     with the "failpoints" build tag the suite builds pgquorum with).
//   - kill -9 of PostgreSQL nodes, two in a row; an emptied proxy data
//     directory; the loss of two of three voters.
//
// # The scenarios (TestFaults, in this order, on one cluster)
//
//	StaleReadUnderPartition    a follower proxy cut from the others but not from the primary,
//	                           which the others cannot reach: the regression test of the
//	                           stale reads of issue 10 (without the routing fence it fails)
//	ZombiePrimaryAnswers08007  SIGSTOP of the primary with a request in its socket: 08007, and
//	                           after SIGCONT the zombie's commit waits forever, acknowledged by no one
//	LeaderKilledAtEveryStep    the leader killed before the fence, after freeze, choose,
//	                           promote, repoint and before complete: one failover, exactly once
//	TwoFailuresNeverAsync      the regression test of the silent asynchronous mode: after two
//	                           failures writes wait (loudly), reads work, nothing acknowledged
//	                           exists on one node only
//	VoterLostItsDataDirectory  a clear error instead of a panic, then the replacement procedure
//	MajorityOfVotersLost       pgquorum recover --force-new-cluster on the survivor; no node unfenced
//
// Each scenario leaves the cluster whole (the old primary rejoined) for the
// next; the first that fails ends the run. The summary at the end lists, per
// scenario, the operations checked, the acknowledged writes and the verdict.
package faults

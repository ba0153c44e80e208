// Package localcluster launches a real local PostgreSQL quorum cluster: one primary and its
// streaming standbys on loopback, with synchronous_commit = on and
// synchronous_standby_names = 'ANY k (standbys...)'. `pgquorum demo` runs on it, and so do the
// integration tests (through package integration, which adds t.TempDir and t.Cleanup).
//
// It owns the PostgreSQL processes it starts and the files under Options.Dir, and nothing else:
// it never touches a server it did not start, and it must not depend on package testing.
//
// # Layout
//
// For each node, in Options.Dir:
//
//	<name>/        unix socket directory (a short temporary one if this path is too long)
//	<name>/data/   data directory; postgresql.conf includes pgquorum.conf, which holds every
//	               setting localcluster manages (port, sync names, primary_conninfo, ...)
//	<name>.log     server log (pg_ctl -l), appended to across restarts
//
// With Options.TLS every node runs with ssl = on and a server certificate signed by a CA made for
// the cluster (Cluster.TLS: Dir/tls/ca.pem and a client certificate); standbys stream with
// sslmode=verify-full and the SQL helpers use sslmode=require. Options.HostSSLOnly makes every
// TCP rule of pg_hba.conf hostssl, so PostgreSQL refuses plaintext TCP connections.
//
// Roles: SuperUser (trusted on the unix socket and loopback), QueryUser with QueryPassword
// (SCRAM; the SQL helpers use it), ReplicationUser (trusted for replication on loopback).
//
// When the process runs as root, PostgreSQL runs as the OS user "postgres": the files are chowned
// to it and Options.Dir (with every parent) must be traversable by it.
//
// # Use
//
//	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Fast: true})
//	if err != nil { ... }
//	defer c.Close()
//	primary, pg2 := c.Nodes[0], c.Node("pg2")
//	err = primary.Exec(ctx, "CREATE TABLE t (id int)")
//	db, err := pgx.Connect(ctx, primary.ConnString(localcluster.QueryUser, localcluster.QueryPassword, "postgres"))
//	err = pg2.Freeze()  // SIGSTOP: connected but silent, acknowledges nothing
//	err = pg2.Thaw()
//	err = primary.Kill()        // SIGKILL the postmaster, like a crash
//	err = pg2.Promote(ctx)      // pg_promote(wait => true)
//	err = primary.Start(ctx)    // crash recovery; it comes back as it was configured (a primary)
//
// Start brings up three nodes in 1.5 to 3.5 seconds on a busy 2-core machine (initdb --no-sync,
// parallel pg_basebackup --no-sync; Fast adds fsync=off and 1 MB WAL segments); most of it is
// initdb and copying files. Ports are chosen free at run time. Every blocking method takes a
// context and is also bounded by a default timeout. Close always stops every process, also of a
// frozen or killed node, and may be called twice; ProcessesIn(dir) proves nothing is left.
package localcluster

// Package pki is the cluster's certificate authority and the identities its
// certificates carry (SPEC §3.4). It makes certificates (`pgquorum cert`),
// reads who a certificate's holder is, and keeps the TLS credentials of a
// running node, reloadable from their files without a restart.
//
// # Identities
//
// Every certificate the cluster CA signs carries exactly one URI SAN that says
// who its holder is:
//
//	pgquorum://<cluster>/ca                          the cluster's CA
//	pgquorum://<cluster>/node/<id>?role=voter        a voting proxy
//	pgquorum://<cluster>/node/<id>?role=learner      a learner (sidecar)
//	pgquorum://<cluster>/node/<first>-<last>?role=learner
//	                                                 a block of learner ids: one
//	                                                 certificate for every sidecar
//	                                                 of an application
//	pgquorum://<cluster>/client/<name>               an operator (admin API)
//
// The peer transport (package consensus) takes a peer's node id, cluster and
// role from its certificate, never from what the peer says; the admin API
// accepts an operator's client certificate instead of the bearer token.
// Host names in the certificate (the DNS and IP SANs of `--hosts`) matter only
// for HTTPS clients of the admin API: peers verify each other by identity.
//
// # What it must not do
//
// It opens no sockets and knows nothing about Raft or configuration files; it
// only makes, reads and verifies certificates. Keys are ECDSA P-256; peers
// speak TLS 1.3 only.
package pki

package integration

import "github.com/pgquorum/pgquorum/integration/proxies"

// The proxy processes of the end-to-end tests live in package proxies (shared
// with integration/faults); these names keep the tests short.
type (
	ProxyCluster = proxies.Cluster
	ProxyProcess = proxies.Process
	ProxyOptions = proxies.Options
)

var (
	StartProxies   = proxies.Start
	PgquorumBinary = proxies.Binary
	FreeAddr       = proxies.FreeAddr
)

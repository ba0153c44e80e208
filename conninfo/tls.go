package conninfo

import "slices"

// sslModes are libpq's sslmode values from the weakest to the strongest.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// sslStrength ranks an sslmode; libpq's default (no sslmode) is prefer, and an
// unknown value ranks lowest (so any known policy replaces it).
func sslStrength(mode string, set bool) int {
	if !set {
		mode = "prefer"
	}
	return slices.Index(sslModes, mode)
}

// WithTLSPolicy returns params made to meet a TLS policy (sslmode and
// optionally sslrootcert, as in a proxy's backend.* settings), never weaker
// than params already are: sslmode becomes the stronger of the two, and
// sslrootcert is params' own when it has one (a path that works on the host
// that reads the string), else the policy's. An empty policy changes nothing.
func WithTLSPolicy(params, policy Params) Params {
	mode, ok := policy.Get("sslmode")
	if !ok {
		return params
	}
	own, ownSet := params.Get("sslmode")
	if sslStrength(mode, true) > sslStrength(own, ownSet) {
		params = params.With("sslmode", mode)
	}
	if _, ok := params.Get("sslrootcert"); !ok {
		if root, ok := policy.Get("sslrootcert"); ok {
			params = params.With("sslrootcert", root)
		}
	}
	return params
}

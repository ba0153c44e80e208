package pgauth

import (
	"crypto"
	"crypto/x509"
)

// Channel binding (RFC 5802 section 6, RFC 5929): SCRAM-SHA-256-PLUS ties the
// exchange to the TLS connection it runs on, so that a man in the middle who
// terminates the client's TLS and opens its own towards the server cannot
// relay the exchange. PostgreSQL supports only the tls-server-end-point type:
// the hash of the server's certificate, which both ends can compute.

// ChannelBindingType is the only channel binding type PostgreSQL (and this
// package) supports.
const ChannelBindingType = "tls-server-end-point"

// SCRAMMechanismPlus is SCRAM-SHA-256 with channel binding, offered over TLS.
const SCRAMMechanismPlus = SCRAMMechanism + "-PLUS"

// TLSServerEndPoint returns the tls-server-end-point channel binding data of
// a server certificate: its DER hashed with the hash of its signature
// algorithm, SHA-256 when that is MD5 or SHA-1 (RFC 5929 section 4.1), as
// PostgreSQL's be_tls_get_certificate_hash computes it. It returns nil for a
// certificate whose signature has no such hash (Ed25519): PostgreSQL cannot
// bind to those either, and -PLUS is then not offered.
func TLSServerEndPoint(cert *x509.Certificate) []byte {
	if cert == nil {
		return nil
	}
	var h crypto.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = crypto.SHA256
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = crypto.SHA512
	default:
		return nil
	}
	hasher := h.New()
	hasher.Write(cert.Raw)
	return hasher.Sum(nil)
}

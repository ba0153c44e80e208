package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Role says what the holder of a certificate may do.
type Role string

const (
	// RoleCA is the cluster's certificate authority.
	RoleCA Role = "ca"
	// RoleVoter is a voting proxy: it may vote, lead and change membership.
	RoleVoter Role = "voter"
	// RoleLearner is a learner (sidecar): it follows the log and never votes,
	// proposes membership changes or speaks for a voter.
	RoleLearner Role = "learner"
	// RoleClient is an operator using the admin API.
	RoleClient Role = "client"
)

// Scheme is the URI scheme of every identity.
const Scheme = "pgquorum"

var (
	// clusterNamePattern is config's cluster_name rule.
	clusterNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	clientNamePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$`)
)

// ErrNoIdentity means a certificate carries no pgquorum identity (for example
// an admin HTTPS certificate from a public CA).
var ErrNoIdentity = errors.New("certificate carries no pgquorum identity (URI SAN pgquorum://...)")

// Identity is who a certificate says its holder is. The zero value is no
// identity.
type Identity struct {
	Cluster string
	Role    Role
	// FirstID and LastID are the node ids a node certificate covers (equal for
	// one node; a learner certificate may cover a block). Zero for others.
	FirstID, LastID uint64
	// Name is an operator's name (RoleClient only).
	Name string
}

// NodeIdentity is the identity of one node.
func NodeIdentity(cluster string, id uint64, role Role) Identity {
	return Identity{Cluster: cluster, Role: role, FirstID: id, LastID: id}
}

// IsNode reports whether the identity is a voter's or a learner's.
func (id Identity) IsNode() bool { return id.Role == RoleVoter || id.Role == RoleLearner }

// Covers reports whether a node certificate covers node id n.
func (id Identity) Covers(n uint64) bool {
	return id.IsNode() && n != 0 && id.FirstID <= n && n <= id.LastID
}

// IDs is the covered node ids as written in the URI and in file names: "7" or
// "1000-1999".
func (id Identity) IDs() string {
	if id.FirstID == id.LastID {
		return strconv.FormatUint(id.FirstID, 10)
	}
	return fmt.Sprintf("%d-%d", id.FirstID, id.LastID)
}

// URI is the identity as a URI SAN.
func (id Identity) URI() *url.URL {
	u := &url.URL{Scheme: Scheme, Host: id.Cluster}
	switch id.Role {
	case RoleCA:
		u.Path = "/ca"
	case RoleClient:
		u.Path = "/client/" + id.Name
	default:
		u.Path = "/node/" + id.IDs()
		u.RawQuery = "role=" + string(id.Role)
	}
	return u
}

func (id Identity) String() string { return id.URI().String() }

// Validate checks the identity's fields.
func (id Identity) Validate() error {
	if !clusterNamePattern.MatchString(id.Cluster) {
		return fmt.Errorf("cluster name %q must be 1-63 letters, digits, '_', '.' or '-'", id.Cluster)
	}
	switch id.Role {
	case RoleCA:
	case RoleClient:
		if !clientNamePattern.MatchString(id.Name) {
			return fmt.Errorf("client name %q must be 1-63 letters, digits, '_', '.', '@' or '-'", id.Name)
		}
	case RoleVoter, RoleLearner:
		if id.FirstID == 0 || id.LastID < id.FirstID {
			return fmt.Errorf("node ids %d-%d: want non-zero ids, first <= last", id.FirstID, id.LastID)
		}
		if id.Role == RoleVoter && id.FirstID != id.LastID {
			return errors.New("a voter certificate names exactly one node id (only learners may share a block of ids)")
		}
	default:
		return fmt.Errorf("unknown role %q", id.Role)
	}
	return nil
}

// ParseIdentity reads an identity URI (see the package doc).
func ParseIdentity(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", s, err)
	}
	if u.Scheme != Scheme {
		return Identity{}, fmt.Errorf("identity %q: scheme is not %s", s, Scheme)
	}
	id := Identity{Cluster: u.Host}
	kind, rest, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", s, err)
	}
	switch kind {
	case "ca":
		id.Role = RoleCA
		if rest != "" {
			return Identity{}, fmt.Errorf("identity %q: unexpected path after /ca", s)
		}
		if len(query) > 0 {
			return Identity{}, fmt.Errorf("identity %q: unexpected query", s)
		}
	case "client":
		id.Role, id.Name = RoleClient, rest
		if len(query) > 0 {
			return Identity{}, fmt.Errorf("identity %q: unexpected query", s)
		}
	case "node":
		id.Role = Role(query.Get("role"))
		if id.FirstID, id.LastID, err = parseIDs(rest); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %w", s, err)
		}
	default:
		return Identity{}, fmt.Errorf("identity %q: want /ca, /node/ID or /client/NAME", s)
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", s, err)
	}
	return id, nil
}

// ParseIDs reads "7" or "1000-1999" (the --id of `pgquorum cert node`).
func ParseIDs(s string) (first, last uint64, err error) { return parseIDs(s) }

func parseIDs(s string) (first, last uint64, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if first, err = strconv.ParseUint(a, 10, 64); err != nil || first == 0 {
		return 0, 0, fmt.Errorf("node id %q is not a positive integer", a)
	}
	last = first
	if isRange {
		if last, err = strconv.ParseUint(b, 10, 64); err != nil || last < first {
			return 0, 0, fmt.Errorf("node id range %q: want FIRST-LAST with FIRST <= LAST", s)
		}
	}
	return first, last, nil
}

// IdentityOf reads the identity of a certificate: exactly one pgquorum URI SAN.
// It does not verify the certificate; see Verify.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != Scheme {
			continue
		}
		id, err := ParseIdentity(u.String())
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, ErrNoIdentity
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("certificate carries %d pgquorum identities, want one", len(found))
	}
}

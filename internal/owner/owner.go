// Package owner holds the names by which tunnelward marks what it owns in
// the clouds: the tunnel name, the DNS record comment, the EC2 and SSM tags
// and the token parameter's path. They are part of what tunnelward leaves
// behind, so changing one strands every resource made under the old one.
// The engine, the plan and the provider clients read them from here; the
// emulator (internal/cloudsim), which imports nothing of tunnelward's,
// writes the same conventions down in its hooks.go, and owner_test.go
// proves the two agree.
package owner

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Tunnel names: "tw-<org>". Names are unique per account among live
// tunnels, which makes creation idempotent.
const TunnelNamePrefix = "tw-"

// TunnelName is the deterministic name of an org's tunnel.
func TunnelName(orgID string) string { return TunnelNamePrefix + orgID }

// OrgFromTunnelName returns the org a tunnel name belongs to, if it is ours.
func OrgFromTunnelName(name string) (string, bool) {
	org, ok := strings.CutPrefix(name, TunnelNamePrefix)
	return org, ok && org != ""
}

// DNSCommentPrefix starts the comment of every DNS record tunnelward owns:
// ownership is a comment, not a TXT record per org, because a free zone
// holds only 200 records.
const DNSCommentPrefix = "tunnelward:org="

// DNSComment is the ownership marker written on an org's DNS record.
func DNSComment(orgID string) string { return DNSCommentPrefix + orgID }

// OrgFromDNSComment returns the org a record comment marks as ours, if any
// (more text may follow the org after a space).
func OrgFromDNSComment(comment string) (string, bool) {
	org, ok := strings.CutPrefix(comment, DNSCommentPrefix)
	if !ok {
		return "", false
	}
	org, _, _ = strings.Cut(org, " ")
	return org, org != ""
}

// Tags on every EC2 instance and SSM parameter tunnelward creates.
const (
	TagManagedBy = "ManagedBy"
	ManagedBy    = "tunnelward" // the value of TagManagedBy
	TagOrgID     = "OrgID"
	TagTunnelID  = "TunnelID"
	// TagGeneration is the org generation an instance was launched for: a
	// re-created org (new generation) never keeps the old one's instance.
	TagGeneration = "Generation"
	TagName       = "Name"
	// TagInstanceArn on the token parameter names the one instance allowed
	// to read it: the instance role's policy matches it against
	// ${ec2:SourceInstanceARN} (deploy/iam/instance-role-policy.json).
	TagInstanceArn = "InstanceArn"
)

// InstanceName is the Name tag of an org's instance.
func InstanceName(orgID string) string { return "tunnelward-" + orgID }

// DefaultParamPrefix is the SSM path the token parameters live under.
const DefaultParamPrefix = "/tunnelward/tunnels"

// ParamName is the token parameter of an org: <prefix>/<org>/tunnel-token.
func ParamName(prefix, orgID string) string {
	return strings.TrimRight(prefix, "/") + "/" + orgID + "/tunnel-token"
}

// OrgFromParamName returns the org a parameter under prefix belongs to.
func OrgFromParamName(prefix, name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, strings.TrimRight(prefix, "/")+"/")
	if !ok {
		return "", false
	}
	org, ok := strings.CutSuffix(rest, "/tunnel-token")
	if !ok || org == "" || strings.Contains(org, "/") {
		return "", false
	}
	return org, true
}

// MaxClientToken is EC2's ClientToken length limit.
const MaxClientToken = 64

// ClientToken derives the RunInstances idempotency token for one launch of
// an org: the same org, generation and attempt always give the same token
// (a retry after a crash returns the original reservation); a new generation
// (org re-created) or a new attempt (instance replaced) gives a new one,
// which matters because EC2 keeps tokens valid for at least 24 h after
// termination. Readable when it fits in 64 characters, else a SHA-256 of
// the readable form.
func ClientToken(orgID string, generation, attempt int64) string {
	tok := TunnelNamePrefix + orgID + "-g" + strconv.FormatInt(generation, 10) + "-a" + strconv.FormatInt(attempt, 10)
	if len(tok) <= MaxClientToken {
		return tok
	}
	sum := sha256.Sum256([]byte(tok))
	return TunnelNamePrefix + hex.EncodeToString(sum[:])[:MaxClientToken-3]
}

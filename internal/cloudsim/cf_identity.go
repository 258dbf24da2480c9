package cloudsim

import (
	"fmt"
	"strings"
)

// Cloudflare identities: the emulator serves several Cloudflare accounts and
// zones, each reached with an API token. An identity is one token with
// access to one account and one zone in it (Config's first identity, then
// Config.CFExtra). As on Cloudflare:
//
//   - a token reaches only the accounts and zones of its identities (another
//     account: 403 code 9109; a zone the emulator serves but the token cannot
//     reach: 403 code 10000; a zone the emulator does not serve at all: 400
//     code 7003, an invalid object identifier);
//   - tunnels belong to an account: names are unique per account, ids of
//     another account are not found, and an account holds at most
//     Config.TunnelQuota live tunnels;
//   - DNS records belong to a zone: names, conflicts and Config.DNSQuota are
//     per zone;
//   - the rate budget (RateLimits.CFBudget per CFWindow) is per API token, a
//     user: the same token in two identities shares one budget.

// CFIdentity is a Cloudflare API token with access to one account and one
// zone in it.
type CFIdentity struct{ Token, AccountID, ZoneID, ZoneName string }

// DefaultTunnelQuota is Cloudflare's limit of cloudflared tunnels per account
// (developers.cloudflare.com/cloudflare-one/account-limits).
const DefaultTunnelQuota = 1000

// CFIdentities returns every Cloudflare identity the configuration serves:
// the first (CFToken, AccountID, ZoneID, ZoneName), then CFExtra.
func (c Config) CFIdentities() []CFIdentity {
	out := make([]CFIdentity, 0, 1+len(c.CFExtra))
	out = append(out, CFIdentity{Token: c.CFToken, AccountID: c.AccountID, ZoneID: c.ZoneID, ZoneName: c.ZoneName})
	return append(out, c.CFExtra...)
}

// ValidateCF names the first thing wrong with the Cloudflare identities: an
// extra identity with an empty field, a token with white space, a zone id
// given two names or two accounts, or a negative quota. Validate includes it.
func (c Config) ValidateCF() error {
	if c.TunnelQuota < 0 {
		return fmt.Errorf("tunnel quota %d: must not be negative (0 means %d)", c.TunnelQuota, DefaultTunnelQuota)
	}
	if c.DNSQuota < 0 {
		return fmt.Errorf("DNS quota %d: must not be negative (0 means 200)", c.DNSQuota)
	}
	zones := map[string]CFIdentity{}
	for i, id := range c.CFIdentities() {
		if i > 0 && (id.Token == "" || id.AccountID == "" || id.ZoneID == "" || id.ZoneName == "") {
			return fmt.Errorf("Cloudflare identity %d: token, account id, zone id and zone name are all required", i+1)
		}
		if strings.ContainsAny(id.Token, " \t\r\n") {
			return fmt.Errorf("Cloudflare identity %d: the API token holds white space", i+1)
		}
		name := normZone(id.ZoneName)
		if prev, ok := zones[id.ZoneID]; ok && (normZone(prev.ZoneName) != name || prev.AccountID != id.AccountID) {
			return fmt.Errorf("Cloudflare zone %s is %s in account %s and %s in account %s: a zone has one name and one account",
				id.ZoneID, prev.ZoneName, prev.AccountID, id.ZoneName, id.AccountID)
		}
		zones[id.ZoneID] = id
	}
	return nil
}

func normZone(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// cfZone is a zone the emulator serves.
type cfZone struct {
	name    string // lowercase, no trailing dot
	account string // the account it belongs to
}

// cfAccess is what one API token may reach.
type cfAccess struct {
	token    string
	accounts map[string]bool
	zones    map[string]bool
}

// cfDirectory is the Cloudflare side's identities, built once by New and
// read-only after: handlers read it without s.mu.
type cfDirectory struct {
	zones    map[string]cfZone    // by zone id
	accounts map[string]bool      // every account served
	tokens   map[string]*cfAccess // by API token
	order    []string             // zone ids in the order of the identities
	first    CFIdentity           // Config's first identity
}

// newCFDirectory indexes cfg's identities. An identity with an empty token
// (a zero Config's first) serves its account and zone to no one; a zone id
// given twice keeps its first name and account (Validate refuses that).
func newCFDirectory(cfg Config) cfDirectory {
	d := cfDirectory{zones: map[string]cfZone{}, accounts: map[string]bool{}, tokens: map[string]*cfAccess{},
		first: CFIdentity{Token: cfg.CFToken, AccountID: cfg.AccountID, ZoneID: cfg.ZoneID, ZoneName: cfg.ZoneName}}
	for _, id := range cfg.CFIdentities() {
		if id.AccountID != "" {
			d.accounts[id.AccountID] = true
		}
		if id.ZoneID != "" {
			if _, ok := d.zones[id.ZoneID]; !ok {
				d.zones[id.ZoneID] = cfZone{name: normZone(id.ZoneName), account: id.AccountID}
				d.order = append(d.order, id.ZoneID)
			}
		}
		if id.Token == "" {
			continue
		}
		a := d.tokens[id.Token]
		if a == nil {
			a = &cfAccess{token: id.Token, accounts: map[string]bool{}, zones: map[string]bool{}}
			d.tokens[id.Token] = a
		}
		if id.AccountID != "" {
			a.accounts[id.AccountID] = true
		}
		if id.ZoneID != "" {
			a.zones[id.ZoneID] = true
		}
	}
	return d
}

// zoneName is the name of a served zone ("" when not served).
func (s *Sim) zoneName(zoneID string) string { return s.cf.zones[zoneID].name }

// zoneOrFirst is zoneID, or the first identity's zone when empty (records
// saved or loaded without one).
func (s *Sim) zoneOrFirst(zoneID string) string {
	if zoneID == "" {
		return s.cf.first.ZoneID
	}
	return zoneID
}

// accountOrFirst is account, or the first identity's account when empty.
func (s *Sim) accountOrFirst(account string) string {
	if account == "" {
		return s.cf.first.AccountID
	}
	return account
}

package config

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v4"

	"github.com/tunnelward/tunnelward/internal/secret"
)

// A pool is one Cloudflare account, one zone in it and the API token that
// reaches them, with the limits placement keeps under and the API budget
// (the Cloudflare user behind the token) its calls draw from. The
// --cloudflare-* settings are the default pool; --cloudflare-pools-file
// adds more (docs/operations.md, Pools).

// Names of the pool settings.
const (
	poolNameFlag  = "cloudflare-pool"
	poolsFileFlag = "cloudflare-pools-file"
)

// Placement policies (--pool-placement); the engine's reconcile.PlaceFill
// and reconcile.PlaceLeastUsed.
const (
	PlaceFill      = "fill"
	PlaceLeastUsed = "least-used"
)

var (
	rePoolName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	reEnvName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Pool is one Cloudflare pool.
type Pool struct {
	Name      string
	AccountID string
	ZoneID    string
	ZoneName  string
	// APIToken never prints: it is a secret.Token.
	APIToken secret.Token
	// TokenEnv or TokenFile says where the token was read from: the
	// environment variable or the file ("" for a sandbox default).
	TokenEnv  string
	TokenFile string
	// MaxTunnels and MaxDNSRecords bound what placement puts in the pool's
	// account and zone; 0 keeps no limit.
	MaxTunnels    int
	MaxDNSRecords int
	// Budget names the API budget the pool draws from: every pool on one
	// token, or naming one budget, shares it (see resolveBudgets).
	Budget string
}

// TokenSource says where the pool's token came from, never what it is.
func (p Pool) TokenSource() string {
	switch {
	case p.TokenEnv != "":
		return "from " + p.TokenEnv
	case p.TokenFile != "":
		return "from the file " + p.TokenFile
	}
	return "(the sandbox default)"
}

// Summary describes the pool in one line for logs and the configuration
// summary: everything but the token, which shows as [redacted] and where
// it came from.
func (p Pool) Summary() string {
	limit := func(n int) string {
		if n == 0 {
			return "no limit"
		}
		return strconv.Itoa(n)
	}
	return fmt.Sprintf("account=%s zone=%s zone_id=%s max_tunnels=%s max_dns_records=%s budget=%s token=%s %s",
		p.AccountID, p.ZoneName, p.ZoneID, limit(p.MaxTunnels), limit(p.MaxDNSRecords), p.Budget, secret.Redacted, p.TokenSource())
}

// Pools lists every Cloudflare pool: the default pool (the --cloudflare-*
// settings) first, then the extra pools in the file's order.
func (c Config) Pools() []Pool {
	def := Pool{Name: c.Cloudflare.Pool, AccountID: c.Cloudflare.AccountID, ZoneID: c.Cloudflare.ZoneID,
		ZoneName: c.Cloudflare.ZoneName, APIToken: c.Cloudflare.APIToken, TokenFile: c.Cloudflare.APITokenFile,
		MaxTunnels: c.Cloudflare.MaxTunnels, MaxDNSRecords: c.Cloudflare.MaxDNSRecords, Budget: c.Cloudflare.Budget}
	if c.Source(EnvCloudflareAPIToken) == "env" {
		def.TokenEnv = EnvCloudflareAPIToken
	}
	return append([]Pool{def}, c.Cloudflare.ExtraPools...)
}

// PoolsSummary describes every pool in one line (never a token), for the
// start-up log.
func (c Config) PoolsSummary() string {
	var parts []string
	for _, p := range c.Pools() {
		parts = append(parts, p.Name+": "+p.Summary())
	}
	return strings.Join(parts, "; ")
}

// sandboxPool2 is the sandbox's second pool (the emulator's second
// identity).
func sandboxPool2() Pool {
	return Pool{Name: SandboxPool2Name, AccountID: SandboxPool2AccountID, ZoneID: SandboxPool2ZoneID,
		ZoneName: SandboxPool2ZoneName, APIToken: secret.NewToken(SandboxPool2Token),
		MaxTunnels: DefaultMaxTunnels, MaxDNSRecords: DefaultMaxDNSRecords}
}

// filePool is one pool as read from the pools file, with what checking
// and budget resolution need to know about how it was written.
type filePool struct {
	Pool
	file   string // the pools file ("" for a default pool)
	index  int    // 1-based position in the file; 0 for the default pool
	line   int
	budget string // as written ("" when not given)
}

// where names the pool in a message: by name when it has a usable one,
// with where it is written.
func (p filePool) where() string {
	at := ""
	if p.file != "" {
		at = fmt.Sprintf(" (%s, line %d)", p.file, p.line)
	}
	if p.Name != "" && rePoolName.MatchString(p.Name) {
		return fmt.Sprintf("pool %q%s", p.Name, at)
	}
	return fmt.Sprintf("pool #%d%s", p.index, at)
}

// poolKeys are the keys one pool may have, in documentation order.
var poolKeys = []string{"name", "account_id", "zone_id", "zone_name", "api_token_env", "api_token_file",
	"max_tunnels", "max_dns_records", "budget"}

// loadPools reads the pools file (or, in the sandbox and URL modes without
// one, adds the sandbox's second pool), checks every pool and every pool
// against the others and the default pool, and names each pool's budget.
// It runs after the mode defaults, so the default pool is complete.
func (c *Config) loadPools(env func(string) string, probs *problems) {
	if c.Cloudflare.Pool == DefaultPoolName && c.Source(poolNameFlag) == "default" && c.Sandboxed() {
		c.Cloudflare.Pool = SandboxPoolName
	}
	flag := "--" + poolsFileFlag
	var pools []filePool
	switch {
	case c.Cloudflare.PoolsFile != "":
		var ok bool
		pools, ok = readPoolsFile(c.Cloudflare.PoolsFile, env, probs)
		if !ok {
			return
		}
	case c.Sandboxed():
		// Unless the default pool was pointed at the second identity.
		p := sandboxPool2()
		if c.Cloudflare.Pool != p.Name && c.Cloudflare.ZoneID != p.ZoneID && c.Cloudflare.ZoneName != p.ZoneName {
			pools = []filePool{{Pool: p, index: 1}}
		}
	}

	// Every pool against the others, the default pool first. Problems of
	// the default pool's own settings are validate's.
	def := c.Pools()[0]
	names := map[string]string{def.Name: "the default pool (--" + poolNameFlag + ")"}
	zoneIDs := map[string]string{def.ZoneID: "the default pool's (--cloudflare-zone-id)"}
	zoneNames := map[string]string{strings.TrimSuffix(def.ZoneName, "."): "the default pool's (--cloudflare-zone-name)"}
	type acct struct {
		max   int
		owner string
	}
	accounts := map[string]acct{def.AccountID: {def.MaxTunnels, "the default pool (--cloudflare-max-tunnels)"}}
	for _, p := range pools {
		w := p.where()
		if prev, ok := names[p.Name]; ok && p.Name != "" {
			probs.add(flag, "%s: name: %q is already %s; pool names are unique", w, p.Name, prev)
		} else if p.Name != "" {
			names[p.Name] = fmt.Sprintf("pool %q (line %d)", p.Name, p.line)
		}
		if prev, ok := zoneIDs[p.ZoneID]; ok && p.ZoneID != "" {
			probs.add(flag, "%s: zone_id: %s is already %s zone; a zone belongs to one pool only", w, p.ZoneID, prev)
		} else if p.ZoneID != "" {
			zoneIDs[p.ZoneID] = fmt.Sprintf("pool %q's", p.Name)
		}
		if prev, ok := zoneNames[p.ZoneName]; ok && p.ZoneName != "" {
			probs.add(flag, "%s: zone_name: %s is already %s zone; a zone belongs to one pool only", w, p.ZoneName, prev)
		} else if p.ZoneName != "" {
			zoneNames[p.ZoneName] = fmt.Sprintf("pool %q's", p.Name)
		}
		if a, ok := accounts[p.AccountID]; ok && p.AccountID != "" && a.max != p.MaxTunnels {
			probs.add(flag, "%s: max_tunnels: %d, but %s has %d in the same account %s; pools in one account share its tunnels, so give them one limit",
				w, p.MaxTunnels, a.owner, a.max, p.AccountID)
		} else if !ok && p.AccountID != "" {
			accounts[p.AccountID] = acct{p.MaxTunnels, fmt.Sprintf("pool %q", p.Name)}
		}
	}

	all := append([]filePool{{Pool: def, index: 0}}, pools...)
	resolveBudgets(all, flag, probs)
	c.Cloudflare.Budget = all[0].Budget
	c.Cloudflare.ExtraPools = nil
	for _, p := range all[1:] {
		c.Cloudflare.ExtraPools = append(c.Cloudflare.ExtraPools, p.Pool)
	}
}

// resolveBudgets names each pool's API budget. A pool names its budget with
// budget:, else it is on the budget named after itself (so budget: NAME
// joins pool NAME's budget). Pools naming one budget share it, and so do
// pools on one token, whatever they name: one token is one user. The
// shared budget's name is that of its first pool (the default first).
func resolveBudgets(pools []filePool, flag string, probs *problems) {
	parent := make([]int, len(pools))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		if parent[i] != i {
			parent[i] = find(parent[i])
		}
		return parent[i]
	}
	union := func(i, j int) {
		a, b := find(i), find(j)
		if a > b {
			a, b = b, a
		}
		parent[b] = a // the earlier pool names the group
	}
	key := func(p filePool) string { return cmp.Or(p.budget, p.Name) }
	byKey, byToken := map[string]int{}, map[string]int{}
	named := map[string]int{} // token -> the first pool on it that names its budget
	for i, p := range pools {
		if j, ok := byKey[key(p)]; ok {
			union(i, j)
		} else {
			byKey[key(p)] = i
		}
		tok := p.APIToken.Reveal()
		if tok == "" {
			continue // reported; no token joins nothing
		}
		if j, ok := byToken[tok]; ok {
			union(i, j)
		} else {
			byToken[tok] = i
		}
		if p.budget == "" {
			continue
		}
		// One token is one user: two budget names for it contradict.
		if j, ok := named[tok]; !ok {
			named[tok] = i
		} else if pools[j].budget != p.budget {
			probs.add(flag, "%s: budget: %q, but %s uses the same API token with budget %q; one token is one budget: give both the same budget or leave it out",
				p.where(), p.budget, poolLabel(pools[j]), pools[j].budget)
		}
	}
	for i := range pools {
		pools[i].Budget = key(pools[find(i)])
	}
}

func poolLabel(p filePool) string {
	if p.index == 0 {
		return fmt.Sprintf("the default pool %q", p.Name)
	}
	return fmt.Sprintf("pool %q", p.Name)
}

// readPoolsFile reads and checks the pools file: a list of pools, or a
// mapping whose one key, pools, holds the list. Every problem names the
// file, the pool and the key. ok is false when the file could not be read
// as a whole.
func readPoolsFile(path string, env func(string) string, probs *problems) (pools []filePool, ok bool) {
	flag := "--" + poolsFileFlag
	f, err := os.Open(path)
	if err != nil {
		probs.add(flag, "cannot read the pools file: %v", err)
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		probs.add(flag, "cannot read the pools file %s: %v", path, err)
		return nil, false
	}
	if len(b) > maxConfigBytes {
		probs.add(flag, "the pools file %s is larger than %d bytes", path, maxConfigBytes)
		return nil, false
	}
	var doc yaml.Node
	// YAML is a superset of JSON, so one decoder reads both.
	if err := yaml.Unmarshal(b, &doc); err != nil {
		probs.add(flag, "the pools file %s is not YAML or JSON: %v", path, err)
		return nil, false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		probs.add(flag, "the pools file %s is empty; it holds a list of pools (`pools: []` for none)", path)
		return nil, false
	}
	list := doc.Content[0]
	if list.Kind == yaml.MappingNode {
		var found *yaml.Node
		for i := 0; i+1 < len(list.Content); i += 2 {
			k, v := list.Content[i], list.Content[i+1]
			if k.Value != "pools" {
				probs.add(flag, "the pools file %s: line %d: unknown key %q; the file holds pools: and a list of pools under it", path, k.Line, k.Value)
				continue
			}
			found = v
		}
		if found == nil {
			if len(list.Content) == 0 {
				probs.add(flag, "the pools file %s has no pools: key; it holds a list of pools (`pools: []` for none)", path)
			}
			return nil, false
		}
		list = found
	}
	if list.Kind != yaml.SequenceNode {
		if list.ShortTag() == "!!null" {
			return nil, true // "pools:" with nothing under it: no extra pools
		}
		probs.add(flag, "the pools file %s: line %d: want a list of pools", path, list.Line)
		return nil, false
	}
	for i, n := range list.Content {
		pools = append(pools, readPool(path, i+1, n, env, probs))
	}
	return pools, true
}

// readPool reads and checks one pool of the file.
func readPool(path string, index int, n *yaml.Node, env func(string) string, probs *problems) filePool {
	p := filePool{file: path, index: index, line: n.Line}
	p.MaxTunnels, p.MaxDNSRecords = DefaultMaxTunnels, DefaultMaxDNSRecords
	flag := "--" + poolsFileFlag
	if n.Kind != yaml.MappingNode {
		probs.add(flag, "%s: want a mapping with the keys %s", p.where(), strings.Join(poolKeys, ", "))
		return p
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i].Value, n.Content[i+1]; k == "name" && v.Kind == yaml.ScalarNode {
			p.Name = strings.TrimSpace(v.Value) // first, so every message names the pool
		}
	}
	bad := func(key, format string, args ...any) {
		probs.add(flag, "%s: %s: %s", p.where(), key, fmt.Sprintf(format, args...))
	}
	vals := map[string]*yaml.Node{}
	inline := false // a token written into the file: reported once
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if _, dup := vals[k]; dup {
			bad(k, "given twice (lines %d and %d)", vals[k].Line, n.Content[i+1].Line)
		}
		vals[k] = n.Content[i+1]
		switch {
		case slices.Contains(poolKeys, k):
		case strings.Contains(strings.ToLower(k), "token") || strings.Contains(strings.ToLower(k), "key") || strings.Contains(strings.ToLower(k), "secret"):
			// Never echo the value: it may be the very token refused.
			inline = true
			bad(k, "a token is never written into the pools file; name it with api_token_env (an environment variable) or api_token_file (a file)")
		default:
			bad(k, "unknown key; a pool has %s", strings.Join(poolKeys, ", "))
		}
	}
	scalar := func(key string) (string, bool) {
		v, ok := vals[key]
		if !ok || v.ShortTag() == "!!null" {
			return "", false
		}
		if v.Kind != yaml.ScalarNode {
			bad(key, "want a single value")
			return "", false
		}
		return strings.TrimSpace(v.Value), true
	}
	required := func(key string) string {
		v, _ := scalar(key)
		if n, given := vals[key]; v == "" && (!given || n.Kind == yaml.ScalarNode) {
			bad(key, "required")
		}
		return v
	}
	whole := func(key string, into *int) {
		v, ok := scalar(key)
		if !ok {
			return
		}
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			bad(key, "%q is not a whole number", v)
		case n < 0:
			bad(key, "%d is negative; want 0 (no limit kept) or more", n)
		default:
			*into = n
		}
	}

	if v := required("name"); v != "" && !rePoolName.MatchString(v) {
		bad("name", "%q is not a pool name (a lowercase letter, then lowercase letters, digits and -, at most 32 in all)", v)
	}
	if v := required("account_id"); v != "" {
		if reHexID.MatchString(v) {
			p.AccountID = v
		} else {
			bad("account_id", "%q is not a Cloudflare account id (32 lowercase hex digits)", v)
		}
	}
	if v := required("zone_id"); v != "" {
		if reHexID.MatchString(v) {
			p.ZoneID = v
		} else {
			bad("zone_id", "%q is not a Cloudflare zone id (32 lowercase hex digits)", v)
		}
	}
	if v := strings.TrimSuffix(required("zone_name"), "."); v != "" {
		if err := checkZoneName(v); err != nil {
			bad("zone_name", "%q: %v", v, err)
		} else {
			p.ZoneName = v
		}
	}
	tokEnv, hasEnv := scalar("api_token_env")
	tokFile, hasFile := scalar("api_token_file")
	switch {
	case hasEnv && hasFile:
		bad("api_token_env", "set together with api_token_file; give the token one way")
	case hasEnv:
		switch tok := strings.TrimSpace(env(tokEnv)); {
		case !reEnvName.MatchString(tokEnv):
			bad("api_token_env", "%q is not an environment variable name", tokEnv)
		case tok == "":
			bad("api_token_env", "the environment variable %s is not set or empty; it must hold the pool's API token", tokEnv)
		case strings.ContainsAny(tok, " \t\r\n"):
			bad("api_token_env", "the environment variable %s contains whitespace; a Cloudflare API token is a single word", tokEnv)
		default:
			p.APIToken, p.TokenEnv = secret.NewToken(tok), tokEnv
		}
	case hasFile:
		if tok, err := readTokenFile(tokFile); err != nil {
			bad("api_token_file", "%v", err)
		} else {
			p.APIToken, p.TokenFile = secret.NewToken(tok), tokFile
		}
	case !inline:
		bad("api_token_env", "required: name the environment variable holding the pool's API token (or give api_token_file); the token itself is never written here")
	}
	whole("max_tunnels", &p.MaxTunnels)
	whole("max_dns_records", &p.MaxDNSRecords)
	if v, ok := scalar("budget"); ok {
		if !rePoolName.MatchString(v) {
			bad("budget", "%q is not a budget name (a lowercase letter, then lowercase letters, digits and -, at most 32 in all)", v)
		} else {
			p.budget = v
		}
	}
	return p
}

// validatePools checks the default pool's own pool settings and the
// placement policy.
func (c *Config) validatePools(probs *problems) {
	if !rePoolName.MatchString(c.Cloudflare.Pool) {
		probs.add("--"+poolNameFlag, "%q is not a pool name (a lowercase letter, then lowercase letters, digits and -, at most 32 in all)", c.Cloudflare.Pool)
	}
	if c.Cloudflare.MaxTunnels < 0 {
		probs.add("--cloudflare-max-tunnels", "%d is negative; want 0 (no limit kept) or more", c.Cloudflare.MaxTunnels)
	}
	if c.Cloudflare.MaxDNSRecords < 0 {
		probs.add("--cloudflare-max-dns-records", "%d is negative; want 0 (no limit kept) or more", c.Cloudflare.MaxDNSRecords)
	}
	switch c.Cloudflare.Placement {
	case PlaceFill, PlaceLeastUsed:
	default:
		probs.add("--pool-placement", "%q: want %s or %s", c.Cloudflare.Placement, PlaceFill, PlaceLeastUsed)
	}
}

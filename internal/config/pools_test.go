package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Hex ids of the pools in these tests.
const (
	acctEU  = "11111111111111111111111111111111"
	acctUS  = "22222222222222222222222222222222"
	zoneEU  = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	zoneEU2 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	zoneUS  = "cccccccccccccccccccccccccccccccc"
	tokEU   = "cfTok_EU_0123456789abcdefghijklmn"
	tokUS   = "cfTok_US_0123456789abcdefghijklmn"
)

// poolNames lists the names of c's pools in order, each with its budget.
func poolNames(c Config) []string {
	var out []string
	for _, p := range c.Pools() {
		out = append(out, p.Name+"@"+p.Budget)
	}
	return out
}

// The sandbox and URL modes serve two pools out of the box: today's
// sandbox identity and the emulator's second one, each its own budget.
func TestSandboxHasTwoPools(t *testing.T) {
	for _, args := range [][]string{nil, {"--cloud", "http://cloudsim:8787"}} {
		c, err := Parse(args, envMap(nil))
		if err != nil {
			t.Fatal(err)
		}
		ps := c.Pools()
		if len(ps) != 2 {
			t.Fatalf("%v: pools %v, want sandbox and sandbox2", args, poolNames(c))
		}
		def, second := ps[0], ps[1]
		if def.Name != SandboxPoolName || def.AccountID != SandboxAccountID || def.ZoneID != SandboxZoneID ||
			def.ZoneName != SandboxZoneName || def.APIToken.Reveal() != SandboxCloudflareToken ||
			def.MaxTunnels != DefaultMaxTunnels || def.MaxDNSRecords != DefaultMaxDNSRecords {
			t.Errorf("%v: default pool %+v", args, def)
		}
		if second.Name != "sandbox2" || second.AccountID != "b2c3d4e5f60718293a4b5c6d7e8f90a1" ||
			second.ZoneID != "e0f1d2c3b4a5968778695a4b3c2d1e0f" || second.ZoneName != "sandbox2.tunnelward.test" ||
			second.APIToken.Reveal() != "sandbox2-token" || second.MaxTunnels != 1000 || second.MaxDNSRecords != 200 {
			t.Errorf("%v: second pool %+v", args, second)
		}
		if def.Budget == second.Budget {
			t.Errorf("%v: the two sandbox users share budget %q; want one each", args, def.Budget)
		}
		if c.Cloudflare.Placement != PlaceFill {
			t.Errorf("placement %q, want fill", c.Cloudflare.Placement)
		}
	}
}

// Live mode without a pools file has the default pool only, named
// "default", with the documented limits.
func TestLiveHasOnlyTheDefaultPool(t *testing.T) {
	c, err := Parse(nil, envMap(liveEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if got := poolNames(c); !slices.Equal(got, []string{"default@default"}) {
		t.Fatalf("pools %v, want the default pool alone", got)
	}
	p := c.Pools()[0]
	if p.MaxTunnels != 1000 || p.MaxDNSRecords != 200 || p.ZoneName != "example.com" || p.TokenEnv != EnvCloudflareAPIToken {
		t.Fatalf("default pool %+v", p)
	}
	c, err = Parse([]string{"--cloudflare-pool", "main", "--cloudflare-max-tunnels", "500", "--cloudflare-max-dns-records", "3500", "--pool-placement", "least-used"}, envMap(liveEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Pools()[0]; p.Name != "main" || p.MaxTunnels != 500 || p.MaxDNSRecords != 3500 || p.Budget != "main" || c.Cloudflare.Placement != PlaceLeastUsed {
		t.Fatalf("default pool %+v, placement %q", p, c.Cloudflare.Placement)
	}
}

func TestPoolsFile(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "us-token")
	writeAt(t, tokFile, tokUS+"\n")
	yml := writeFile(t, "pools.yaml", fmt.Sprintf(`
pools:
  - name: eu
    account_id: %s
    zone_id: %s
    zone_name: eu.example.com.
    api_token_env: CF_TOKEN_EU
    max_tunnels: 800
    max_dns_records: 3500
  - name: eu-2
    account_id: %s
    zone_id: %s
    zone_name: eu2.example.com
    api_token_env: CF_TOKEN_EU_AGAIN   # the same token as eu: one user, one budget
    max_tunnels: 800
  - name: us
    account_id: %s
    zone_id: %s
    zone_name: us.example.com
    api_token_file: %s
    max_dns_records: 0
    budget: default                  # another token of the default pool's user
`, acctEU, zoneEU, acctEU, zoneEU2, acctUS, zoneUS, tokFile))
	env := liveEnv()
	env["CF_TOKEN_EU"], env["CF_TOKEN_EU_AGAIN"] = tokEU, tokEU
	env["TUNNELWARD_CLOUDFLARE_POOLS_FILE"] = yml
	c, err := Parse(nil, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := poolNames(c), []string{"default@default", "eu@eu", "eu-2@eu", "us@default"}; !slices.Equal(got, want) {
		t.Fatalf("pools@budget %v, want %v", got, want)
	}
	ps := c.Pools()
	eu, eu2, us := ps[1], ps[2], ps[3]
	if eu.AccountID != acctEU || eu.ZoneID != zoneEU || eu.ZoneName != "eu.example.com" || eu.APIToken.Reveal() != tokEU ||
		eu.TokenEnv != "CF_TOKEN_EU" || eu.MaxTunnels != 800 || eu.MaxDNSRecords != 3500 {
		t.Errorf("eu %+v", eu)
	}
	if eu2.MaxDNSRecords != DefaultMaxDNSRecords {
		t.Errorf("eu-2 without max_dns_records has %d, want the default %d", eu2.MaxDNSRecords, DefaultMaxDNSRecords)
	}
	if us.APIToken.Reveal() != tokUS || us.TokenFile != tokFile || us.MaxTunnels != DefaultMaxTunnels || us.MaxDNSRecords != 0 {
		t.Errorf("us %+v", us)
	}
	if c.Source(poolsFileFlag) != "env" || c.Cloudflare.PoolsFile != yml {
		t.Errorf("pools file %q from %s", c.Cloudflare.PoolsFile, c.Source(poolsFileFlag))
	}

	// The same pools as JSON, a bare list, read through the config file.
	js, _ := json.Marshal([]map[string]any{{"name": "eu", "account_id": acctEU, "zone_id": zoneEU, "zone_name": "eu.example.com",
		"api_token_env": "CF_TOKEN_EU", "max_tunnels": 1000, "max_dns_records": 200}})
	jsonFile := writeFile(t, "pools.json", string(js))
	delete(env, "TUNNELWARD_CLOUDFLARE_POOLS_FILE")
	cfgFile := writeFile(t, "reconciler.yaml", "cloudflare-pools-file: "+jsonFile+"\n")
	c, err = Parse([]string{"--config", cfgFile}, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if got := poolNames(c); !slices.Equal(got, []string{"default@default", "eu@eu"}) {
		t.Fatalf("from JSON: %v", got)
	}
}

// A pools file replaces the sandbox's second pool; an empty list leaves
// the sandbox pool alone.
func TestPoolsFileInSandbox(t *testing.T) {
	env := map[string]string{"CF_TOKEN_EU": tokEU}
	f := writeFile(t, "pools.yaml", fmt.Sprintf("- {name: eu, account_id: %s, zone_id: %s, zone_name: eu.example.com, api_token_env: CF_TOKEN_EU}\n", acctEU, zoneEU))
	c, err := Parse([]string{"--cloudflare-pools-file", f}, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if got := poolNames(c); !slices.Equal(got, []string{"sandbox@sandbox", "eu@eu"}) {
		t.Fatalf("pools %v, want sandbox and eu", got)
	}
	c, err = Parse([]string{"--cloudflare-pools-file", writeFile(t, "none.yaml", "pools: []\n")}, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if got := poolNames(c); !slices.Equal(got, []string{"sandbox@sandbox"}) {
		t.Fatalf("pools %v, want sandbox alone", got)
	}
	// The default pool pointed at the second identity: no second pool.
	c, err = Parse([]string{"--cloudflare-zone-id", SandboxPool2ZoneID, "--cloudflare-zone-name", SandboxPool2ZoneName,
		"--cloudflare-account-id", SandboxPool2AccountID}, envMap(map[string]string{EnvCloudflareAPIToken: SandboxPool2Token}))
	if err != nil {
		t.Fatal(err)
	}
	if got := poolNames(c); !slices.Equal(got, []string{"sandbox@sandbox"}) {
		t.Fatalf("pools %v, want the one pool", got)
	}
}

func TestPoolsFileProblems(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	writeAt(t, tokFile, tokUS+"\n")
	pool := func(name, zone, zoneName string, extra string) string {
		return fmt.Sprintf("  - name: %s\n    account_id: %s\n    zone_id: %s\n    zone_name: %s\n%s", name, acctEU, zone, zoneName, extra)
	}
	tok := "    api_token_env: CF_TOKEN_EU\n"
	cases := []struct {
		name string
		file string
		want []string // fragments, each in one problem of --cloudflare-pools-file
	}{
		{"duplicate names", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok) + pool("eu", zoneEU2, "eu2.example.com", tok),
			[]string{`pool "eu" (` + "%FILE%" + `, line 7): name: "eu" is already pool "eu" (line 2); pool names are unique`}},
		{"the default pool's name", "pools:\n" + pool("default", zoneEU, "eu.example.com", tok),
			[]string{`pool "default"`, `name: "default" is already the default pool (--cloudflare-pool)`}},
		{"duplicate zone id", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok) + pool("eu-2", zoneEU, "eu2.example.com", tok),
			[]string{`pool "eu-2"`, `zone_id: ` + zoneEU + ` is already pool "eu"'s zone; a zone belongs to one pool only`}},
		{"the default pool's zone", "pools:\n" + pool("eu", "fedcba9876543210fedcba9876543210", "eu.example.com", tok),
			[]string{`pool "eu"`, `zone_id: fedcba9876543210fedcba9876543210 is already the default pool's (--cloudflare-zone-id) zone`}},
		{"duplicate zone name", "pools:\n" + pool("eu", zoneEU, "example.com", tok),
			[]string{`zone_name: example.com is already the default pool's (--cloudflare-zone-name) zone`}},
		{"malformed ids", "pools:\n  - {name: eu, account_id: acct-1, zone_id: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, zone_name: eu.example.com, api_token_env: CF_TOKEN_EU}\n",
			[]string{`pool "eu"`, `account_id: "acct-1" is not a Cloudflare account id (32 lowercase hex digits)`,
				`zone_id: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" is not a Cloudflare zone id`}},
		{"bad name", "pools:\n" + pool("EU_1", zoneEU, "eu.example.com", tok),
			[]string{`pool #1 (`, `name: "EU_1" is not a pool name`}},
		{"name too long", "pools:\n" + pool("a"+strings.Repeat("b", 32), zoneEU, "eu.example.com", tok),
			[]string{`is not a pool name`}},
		{"missing fields", "pools:\n  - name: eu\n", []string{`pool "eu"`, "account_id: required", "zone_id: required", "zone_name: required", "api_token_env: required"}},
		{"token env unset", "pools:\n" + pool("eu", zoneEU, "eu.example.com", "    api_token_env: CF_TOKEN_NOT_SET\n"),
			[]string{`api_token_env: the environment variable CF_TOKEN_NOT_SET is not set or empty`}},
		{"token env empty", "pools:\n" + pool("eu", zoneEU, "eu.example.com", "    api_token_env: CF_TOKEN_EMPTY\n"),
			[]string{`the environment variable CF_TOKEN_EMPTY is not set or empty`}},
		{"token file empty", "pools:\n" + pool("eu", zoneEU, "eu.example.com", "    api_token_file: "+writeAt(t, filepath.Join(dir, "empty"), "\n")+"\n"),
			[]string{`api_token_file: token file`, `is empty`}},
		{"token both ways", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    api_token_file: "+tokFile+"\n"),
			[]string{`api_token_env: set together with api_token_file`}},
		{"inline token", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    api_token: cfTok_Inline_NeverEcho_0123456789\n"),
			[]string{`api_token: a token is never written into the pools file`}},
		{"negative limits", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    max_tunnels: -1\n    max_dns_records: lots\n"),
			[]string{`max_tunnels: -1 is negative`, `max_dns_records: "lots" is not a whole number`}},
		{"unknown key", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    zone: eu.example.com\n"),
			[]string{`pool "eu"`, `zone: unknown key; a pool has name, account_id, zone_id, zone_name, api_token_env, api_token_file, max_tunnels, max_dns_records, budget`}},
		{"unknown top-level key", "pool:\n" + pool("eu", zoneEU, "eu.example.com", tok), []string{`unknown key "pool"`}},
		{"bad budget name", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    budget: Main User\n"), []string{`budget: "Main User" is not a budget name`}},
		{"one token two budgets", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    budget: one\n") + pool("eu-2", zoneEU2, "eu2.example.com", tok+"    budget: two\n"),
			[]string{`pool "eu-2"`, `budget: "two", but pool "eu" uses the same API token with budget "one"`}},
		{"one token two budgets past an unnamed one", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok) + pool("eu-2", zoneEU2, "eu2.example.com", tok+"    budget: one\n") +
			pool("eu-3", "dddddddddddddddddddddddddddddddd", "eu3.example.com", tok+"    budget: two\n"),
			[]string{`pool "eu-3"`, `budget: "two", but pool "eu-2" uses the same API token with budget "one"`}},
		{"one account two tunnel limits", "pools:\n" + pool("eu", zoneEU, "eu.example.com", tok+"    max_tunnels: 500\n") + pool("eu-2", zoneEU2, "eu2.example.com", tok),
			[]string{`pool "eu-2"`, `max_tunnels: 1000, but pool "eu" has 500 in the same account`}},
		{"not a list", "pools: eu\n", []string{"want a list of pools"}},
		{"a pool not a mapping", "pools:\n  - eu\n", []string{"pool #1", "want a mapping with the keys name"}},
		{"empty file", "", []string{"is empty"}},
		{"not yaml", "pools: [\n", []string{"is not YAML or JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := liveEnv()
			env["CF_TOKEN_EU"] = tokEU
			f := writeFile(t, "pools.yaml", tc.file)
			_, err := Parse([]string{"--cloudflare-pools-file", f}, envMap(env))
			if err == nil {
				t.Fatal("Parse accepted a wrong pools file")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want *Error, got %v", err)
			}
			for _, p := range e.Problems {
				if p.Setting != "--"+poolsFileFlag {
					t.Errorf("a problem names %s, want --%s: %s", p.Setting, poolsFileFlag, p.Detail)
				}
				if strings.Contains(p.Detail, tokEU) || strings.Contains(p.Detail, "NeverEcho") {
					t.Errorf("a problem prints a token: %s", p.Detail)
				}
			}
			for _, w := range tc.want {
				w = strings.ReplaceAll(w, "%FILE%", f)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("no problem says %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestPoolSettingProblems(t *testing.T) {
	cases := []struct {
		args []string
		want map[string]string
	}{
		{[]string{"--cloudflare-pool", "Main"}, map[string]string{"--cloudflare-pool": `"Main" is not a pool name`}},
		{[]string{"--cloudflare-max-tunnels", "-5"}, map[string]string{"--cloudflare-max-tunnels": "-5 is negative"}},
		{[]string{"--cloudflare-max-dns-records", "many"}, map[string]string{"--cloudflare-max-dns-records": `"many": not a whole number`}},
		{[]string{"--pool-placement", "random"}, map[string]string{"--pool-placement": `"random": want fill or least-used`}},
		{[]string{"--cloudflare-pools-file", filepath.Join(t.TempDir(), "missing.yaml")}, map[string]string{"--cloudflare-pools-file": "cannot read the pools file"}},
	}
	for _, tc := range cases {
		_, err := Parse(tc.args, envMap(nil))
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) != len(tc.want) {
			t.Errorf("%v: %v, want %d problem(s)", tc.args, err, len(tc.want))
			continue
		}
		for _, p := range e.Problems {
			if w, ok := tc.want[p.Setting]; !ok || !strings.Contains(p.Detail, w) {
				t.Errorf("%v: %s: %s, want %q", tc.args, p.Setting, p.Detail, tc.want[p.Setting])
			}
		}
	}
}

// Pool tokens show nowhere: not in String, Values, the log, JSON, %+v or
// the pools summary of the start-up log; the pools themselves do.
func TestPoolTokensNeverPrinted(t *testing.T) {
	env := liveEnv()
	env["CF_TOKEN_EU"] = tokEU
	f := writeFile(t, "pools.yaml", fmt.Sprintf("- {name: eu, account_id: %s, zone_id: %s, zone_name: eu.example.com, api_token_env: CF_TOKEN_EU}\n", acctEU, zoneEU))
	c, err := Parse([]string{"--cloudflare-pools-file", f}, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", c)
	js, _ := json.Marshal(c)
	for name, out := range map[string]string{"String": c.String(), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"slog": logged.String(), "json": string(js), "summary": c.PoolsSummary(), "pools %+v": fmt.Sprintf("%+v", c.Pools())} {
		if strings.Contains(out, tokEU) || strings.Contains(out, liveEnv()[EnvCloudflareAPIToken]) {
			t.Errorf("%s prints a token: %s", name, out)
		}
	}
	for _, want := range []string{`pool eu="account=` + acctEU + ` zone=eu.example.com zone_id=` + zoneEU, `token=[redacted] from CF_TOKEN_EU`} {
		if !strings.Contains(c.String(), want) {
			t.Errorf("String lacks %q: %s", want, c.String())
		}
	}
	if s := c.PoolsSummary(); !strings.HasPrefix(s, "default: account=") || !strings.Contains(s, "; eu: account="+acctEU) ||
		!strings.Contains(s, "max_tunnels=1000 max_dns_records=200") {
		t.Errorf("summary %s", s)
	}
}

func writeAt(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

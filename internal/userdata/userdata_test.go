package userdata

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/secret"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func acme(t *testing.T) string {
	t.Helper()
	s, err := Render(Params{OrgID: "acme", ParameterName: "/tunnelward/acme/tunnel-token"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGolden(t *testing.T) {
	got := acme(t)
	path := filepath.Join("testdata", "acme.sh.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/userdata -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("rendered user-data differs from %s; review the diff and rerun with -update:\n%s", path, got)
	}
}

// The emulator's simulated cloudflared (and operators) find the parameter by
// this exact line.
func TestNamesParameter(t *testing.T) {
	s := acme(t)
	if !strings.Contains(s, "\nTUNNEL_TOKEN_PARAMETER='/tunnelward/acme/tunnel-token'\n") {
		t.Fatal("no TUNNEL_TOKEN_PARAMETER='<name>' line")
	}
	for _, want := range []string{
		"aws ssm get-parameter", "--with-decryption", "X-aws-ec2-metadata-token",
		"tunnel --no-autoupdate --metrics ${METRICS_ADDR} run", "Restart=always", "TimeoutStopSec=30",
		"sha256sum --check", "chmod 0600", "EnvironmentFile=-${TOKEN_ENV_FILE}",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if len(s) > MaxSize {
		t.Errorf("script is %d bytes, over EC2's %d", len(s), MaxSize)
	}
}

func TestNeverContainsToken(t *testing.T) {
	tok := secret.NewToken("eyJhIjoiYTFiMmMzZDQiLCJ0IjoiNmZmNDJhZTItNzY1ZC00YWRmLTgxMTItMzFjNTVjMTU1MWVmIiwicyI6IlNFQ1JFVCJ9")
	for _, p := range []Params{
		{OrgID: "acme", ParameterName: "/tunnelward/acme/tunnel-token"},
		{OrgID: "a-b-c", ParameterName: "/x/a-b-c/tunnel-token", SHA256ARM64: strings.Repeat("ab", 32)},
	} {
		s, err := Render(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, tok.Reveal()) || strings.Contains(s, "eyJ") || regexp.MustCompile(`TUNNEL_TOKEN=[^%]`).MatchString(s) {
			t.Fatalf("rendered user-data contains a token value:\n%s", s)
		}
	}
}

func TestRejectsBadInput(t *testing.T) {
	good := Params{OrgID: "acme", ParameterName: "/tunnelward/acme/tunnel-token"}
	cases := map[string]func(p *Params){
		"org id":              func(p *Params) { p.OrgID = "Acme'; rm -rf /" },
		"parameter name":      func(p *Params) { p.ParameterName = "/tw/acme'$(id)" },
		"cloudflared version": func(p *Params) { p.CloudflaredVersion = "1.0\nrm" },
		"amd64 SHA-256":       func(p *Params) { p.CloudflaredVersion = "2025.1.0"; p.SHA256AMD64 = "xyz" },
		"download base URL":   func(p *Params) { p.DownloadBase = "http://example.test/x" },
		"metrics address":     func(p *Params) { p.MetricsAddr = "0.0.0.0:20241 --evil" },
	}
	for field, mutate := range cases {
		p := good
		mutate(&p)
		_, err := Render(p)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: err = %v", field, err)
		}
	}
	p := good
	p.OrgID, p.ParameterName = "", "relative/name"
	_, err := Render(p)
	if err == nil || !strings.Contains(err.Error(), "org id") || !strings.Contains(err.Error(), "parameter name") {
		t.Errorf("both bad fields not named: %v", err)
	}
}

// A pinned version without a checksum must not silently reuse the default's.
func TestOtherVersionNeedsItsOwnChecksum(t *testing.T) {
	s, err := Render(Params{OrgID: "acme", ParameterName: "/tw/acme/tunnel-token", CloudflaredVersion: "2025.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, DefaultSHA256AMD64) {
		t.Fatal("checksum of the default version used for another version")
	}
}

func TestShellQuoteRoundTrip(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	for _, v := range []string{"plain", "it's", `a"b$c` + "`id`", "'", "", "x y\tz"} {
		out, err := exec.Command(bash, "-c", "x="+shellQuote(v)+"; printf %s \"$x\"").Output()
		if err != nil || string(out) != v {
			t.Errorf("%q -> %q (%v)", v, out, err)
		}
	}
}

// TestShellcheck runs shellcheck on the rendered script and the token
// fetcher. Under CI a missing shellcheck is a failure, not a skip.
func TestShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("shellcheck not installed (CI must install the Debian package shellcheck)")
		}
		t.Skip("shellcheck not installed")
	}
	dir := t.TempDir()
	files := map[string]string{"userdata.sh": acme(t), "fetch-token.sh": FetchScript()}
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sc, "--severity=style", "--shell=bash", path).CombinedOutput()
		if err != nil {
			t.Errorf("shellcheck %s: %v\n%s", name, err, out)
		}
	}
}

func TestRestartCommands(t *testing.T) {
	c := RestartCommands("")
	if c[0] != "systemctl restart cloudflared" || !strings.Contains(c[1], "127.0.0.1:20241/ready") {
		t.Fatalf("%q", c)
	}
}

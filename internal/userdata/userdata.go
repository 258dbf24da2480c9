// Package userdata renders the EC2 user-data script that installs and runs
// cloudflared for one org (docs/architecture.md, "The instance"). The script names the SSM
// parameter holding the tunnel token and never contains the token: the
// instance fetches it at boot with its instance role.
package userdata

import (
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

//go:embed userdata.sh.tmpl
var scriptTmpl string

//go:embed fetch-token.sh
var fetchScript string

// Pinned cloudflared used when the AMI has none. The checksum is of the
// release asset cloudflared-linux-amd64 (from a published package manifest);
// verify it against the release before relying on downloads in production,
// and prefer an AMI with cloudflared pre-installed. No arm64 checksum is
// pinned, so arm64 instances need a pre-baked binary or a configured sum.
const (
	DefaultCloudflaredVersion = "2024.12.2"
	DefaultSHA256AMD64        = "5237675a5e806120729acc78c5be02f9db5f406717699587abfa72b49b39fe40"
	DefaultDownloadBase       = "https://github.com/cloudflare/cloudflared/releases/download"
	DefaultMetricsAddr        = "127.0.0.1:20241"
	DefaultFetchMaxWait       = 900 // seconds the token fetcher keeps retrying
)

// Params are the values the script is rendered with. None is secret.
type Params struct {
	OrgID              string
	ParameterName      string // SSM parameter holding the token
	CloudflaredVersion string
	SHA256AMD64        string
	SHA256ARM64        string // "" means: arm64 needs a pre-baked cloudflared
	DownloadBase       string
	MetricsAddr        string
	// FetchMaxWaitSeconds bounds one start's wait for SSM; systemd restarts
	// the service after it, so the instance keeps trying.
	FetchMaxWaitSeconds int
}

func (p *Params) defaults() {
	if p.CloudflaredVersion == "" {
		p.CloudflaredVersion = DefaultCloudflaredVersion
		if p.SHA256AMD64 == "" {
			p.SHA256AMD64 = DefaultSHA256AMD64
		}
	}
	if p.DownloadBase == "" {
		p.DownloadBase = DefaultDownloadBase
	}
	if p.MetricsAddr == "" {
		p.MetricsAddr = DefaultMetricsAddr
	}
	if p.FetchMaxWaitSeconds == 0 {
		p.FetchMaxWaitSeconds = DefaultFetchMaxWait
	}
}

var (
	reOrgID   = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	reParam   = regexp.MustCompile(`^/[A-Za-z0-9_.\-/]+$`)
	reVersion = regexp.MustCompile(`^[0-9A-Za-z.\-]{1,40}$`)
	reSHA256  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reURL     = regexp.MustCompile(`^https://[A-Za-z0-9.\-]+(:[0-9]+)?(/[A-Za-z0-9._~\-/]*)?$`)
	reAddr    = regexp.MustCompile(`^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9a-fA-F:]+\]:[0-9]{1,5}$`)
)

func (p Params) validate() error {
	var bad []string
	check := func(ok bool, what string, v any) {
		if !ok {
			bad = append(bad, fmt.Sprintf("%s %q", what, v))
		}
	}
	check(reOrgID.MatchString(p.OrgID), "org id", p.OrgID)
	check(reParam.MatchString(p.ParameterName) && len(p.ParameterName) <= 1011 && !strings.Contains(p.ParameterName, "//"), "parameter name", p.ParameterName)
	check(reVersion.MatchString(p.CloudflaredVersion), "cloudflared version", p.CloudflaredVersion)
	check(p.SHA256AMD64 == "" || reSHA256.MatchString(p.SHA256AMD64), "amd64 SHA-256", p.SHA256AMD64)
	check(p.SHA256ARM64 == "" || reSHA256.MatchString(p.SHA256ARM64), "arm64 SHA-256", p.SHA256ARM64)
	check(reURL.MatchString(p.DownloadBase), "download base URL (https only)", p.DownloadBase)
	check(reAddr.MatchString(p.MetricsAddr), "metrics address", p.MetricsAddr)
	check(p.FetchMaxWaitSeconds > 0 && p.FetchMaxWaitSeconds <= 86400, "fetch max wait seconds", p.FetchMaxWaitSeconds)
	if len(bad) > 0 {
		return fmt.Errorf("user-data: invalid %s", strings.Join(bad, ", "))
	}
	return nil
}

// shellQuote single-quotes s for bash. Values are validated first; quoting
// still makes the script safe should a validation rule ever loosen.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var tmpl = template.Must(template.New("userdata").Funcs(template.FuncMap{"q": shellQuote}).Parse(scriptTmpl))

// MaxSize is EC2's user-data limit (before base64).
const MaxSize = 16 * 1024

// Render returns the script for p (defaults filled in), or an error naming
// every invalid field.
func Render(p Params) (string, error) {
	p.defaults()
	if err := p.validate(); err != nil {
		return "", err
	}
	fs := fetchScript
	if strings.Contains(fs, "\nTW_FETCH_EOF\n") {
		return "", fmt.Errorf("user-data: fetch script contains its heredoc delimiter")
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, struct {
		Params
		FetchScript string
	}{p, fs}); err != nil {
		return "", fmt.Errorf("user-data for org %s: %w", p.OrgID, err)
	}
	if b.Len() > MaxSize {
		return "", fmt.Errorf("user-data for org %s: %d bytes exceeds EC2's %d", p.OrgID, b.Len(), MaxSize)
	}
	return b.String(), nil
}

// FetchScript is the token fetcher the user-data installs (for shellcheck).
func FetchScript() string { return fetchScript }

// RestartCommands is what remediation sends through SSM SendCommand
// (AWS-RunShellScript): restart cloudflared (which fetches the token again)
// and report /ready in the command output.
func RestartCommands(metricsAddr string) []string {
	if metricsAddr == "" {
		metricsAddr = DefaultMetricsAddr
	}
	return []string{
		"systemctl restart cloudflared",
		"curl -sS --max-time 5 http://" + metricsAddr + "/ready || true",
	}
}

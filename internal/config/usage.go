package config

import (
	"fmt"
	"strings"

	"github.com/tunnelward/tunnelward/internal/textwrap"
)

// Usage is the settings part of --help for a command named cmd, generated
// from the same declarations Parse uses.
func Usage(cmd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [flags]\n\n", cmd)
	b.WriteString(textwrap.Wrap("Each setting is taken from its flag, else its TUNNELWARD_* environment variable, else the config file (--config FILE, YAML or JSON, keys are the flag names), else its default. In sandbox mode and with --cloud URL the Cloudflare and AWS identities default to the sandbox ones.", 0, 80))
	b.WriteString("\n\n  --config FILE\n")
	b.WriteString(textwrap.Wrap("read settings from this YAML or JSON file (env "+EnvConfigFile+")", 6, 80))
	b.WriteString("\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s:\n", g)
		for _, s := range settings {
			if s.group != g {
				continue
			}
			fmt.Fprintf(&b, "  --%s %s\n", s.name, s.metavar)
			b.WriteString(textwrap.Wrap(s.usageLine(), 6, 80))
			b.WriteString("\n")
		}
		if g == groupAdmin {
			fmt.Fprintf(&b, "  %s (environment only)\n", EnvAdminToken)
			b.WriteString(textwrap.Wrap(adminTokenHelp, 6, 80))
			b.WriteString("\n")
		}
		if g == groupCloudflare {
			fmt.Fprintf(&b, "  %s (environment only)\n", EnvCloudflareAPIToken)
			b.WriteString(textwrap.Wrap("the Cloudflare API token (Account: Cloudflare Tunnel Edit; Zone: DNS Edit on the one zone); required in live mode unless --"+cloudflareTokenFileFlag+" is set", 6, 80))
			b.WriteString("\n")
		}
	}
	return b.String()
}

// adminTokenHelp describes TUNNELWARD_ADMIN_TOKEN in --help and the
// reference table.
var adminTokenHelp = fmt.Sprintf("the admin API's bearer token (at least %d characters); optional on a loopback --admin-listen, "+
	"required on any other unless --admin-insecure; --%s reads it from a file instead", MinAdminTokenLen, adminTokenFileFlag)

// MarkdownReference is the configuration reference table of
// docs/operations.md; a test keeps the document equal to it.
func MarkdownReference() string {
	var b strings.Builder
	b.WriteString("| Flag | Environment variable | Default | Description |\n")
	b.WriteString("| --- | --- | --- | --- |\n")
	// Pipes would end a table cell and <...> would read as HTML.
	esc := strings.NewReplacer("|", `\|`, "<", `\<`, ">", `\>`)
	row := func(flag, env, def, help string) {
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", strings.ReplaceAll(flag, "|", `\|`), env, def, esc.Replace(help))
	}
	row("`--config FILE`", EnvConfigFile, "", "read settings from this YAML or JSON file; keys are the flag names")
	for _, g := range groups {
		for _, s := range settings {
			if s.group != g {
				continue
			}
			def := ""
			if s.def != "" {
				def = "`" + s.def + "`"
			}
			if s.sandboxDef != "" {
				if def != "" {
					def += "; "
				}
				def += "sandbox: `" + s.sandboxDef + "`"
			}
			if s.name == "reserved-slugs" {
				def = "the built-in list (`www`, `api`, `admin`, ...)"
			}
			row("`--"+s.name+" "+s.metavar+"`", s.env, def, s.help)
		}
		if g == groupAdmin {
			row("(none)", EnvAdminToken, "", adminTokenHelp+"; never a flag, never in the config file")
		}
		if g == groupCloudflare {
			row("(none)", EnvCloudflareAPIToken, "sandbox: `"+SandboxCloudflareToken+"`",
				"the Cloudflare API token; required in live mode unless --"+cloudflareTokenFileFlag+" is set; never a flag, never in the config file")
		}
	}
	return b.String()
}

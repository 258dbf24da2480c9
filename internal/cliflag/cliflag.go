// Package cliflag makes the standard flag package speak to people the way
// the commands' generated help does: flags shown with two dashes, parse
// errors naming the flag as it was typed with the closest known flag, and
// one --help layout for every command.
package cliflag

import (
	"flag"
	"fmt"
	"strings"

	"github.com/tunnelward/tunnelward/internal/textwrap"
)

// Explain rewrites an error of fs.Parse(args): flag reports "-bogus" for
// "--bogus"; this names the flag as typed, suggests the closest flag fs
// knows, and points at help ("reconciler run --help"). Other errors pass
// through.
func Explain(err error, fs *flag.FlagSet, args []string, help string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	see := fmt.Sprintf("; see %s", help)
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		hint := ""
		if s := Closest(name, fs); s != "" {
			hint = fmt.Sprintf(" (did you mean --%s?)", s)
		}
		return fmt.Errorf("unknown flag %s%s%s", Typed(name, args), hint, see)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		metavar := "VALUE"
		if f := fs.Lookup(name); f != nil && metavarOf(f) != "" {
			metavar = metavarOf(f)
		}
		return fmt.Errorf("flag %s needs a value (%s %s)%s", Typed(name, args), Typed(name, args), metavar, see)
	}
	// invalid value "x" for flag -name: ...; invalid boolean value "x" for -name: ...
	for _, marker := range []string{" for flag -", " for -"} {
		if i := strings.Index(msg, marker); i >= 0 && strings.HasPrefix(msg, "invalid ") {
			rest := msg[i+len(marker):]
			name, why, _ := strings.Cut(rest, ": ")
			return fmt.Errorf("%s for %s: %s%s", msg[:i], Typed(name, args), why, see)
		}
	}
	return fmt.Errorf("%w%s", err, see)
}

// Typed is the flag as it appears in args (--name, -name, with or without
// =value), so an error quotes what the user wrote; --name when absent.
func Typed(name string, args []string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		bare := strings.TrimLeft(a, "-")
		if before, _, _ := strings.Cut(bare, "="); before == name {
			return a[:len(a)-len(bare)] + name
		}
	}
	return "--" + name
}

// Closest is the flag of fs nearest to name (case, underscores and typos of
// up to a third of its length forgiven, or a unique prefix), "" when none
// is near enough to be a useful guess.
func Closest(name string, fs *flag.FlagSet) string {
	norm := strings.ReplaceAll(strings.ToLower(name), "_", "-")
	best, bestD := "", len(norm)/3+1
	var prefixed []string
	fs.VisitAll(func(f *flag.Flag) {
		if d := distance(norm, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
		if len(norm) >= 3 && strings.HasPrefix(f.Name, norm) {
			prefixed = append(prefixed, f.Name)
		}
	})
	if best == "" && len(prefixed) == 1 {
		best = prefixed[0]
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Usage lists fs's flags in the layout of every command's --help:
//
//	--name METAVAR
//	    usage, wrapped at 80 columns (default X)
//
// METAVAR is the `quoted` word of the usage text, else named after the
// flag's type (DURATION, N, VALUE); booleans have none.
func Usage(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		metavar, usage := metavarOf(f), unquoted(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if metavar != "" {
			b.WriteString(" " + metavar)
		}
		b.WriteString("\n")
		if f.DefValue != "" && !(metavar == "" && f.DefValue == "false") {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		b.WriteString(textwrap.Wrap(usage, 6, 80) + "\n")
	})
	return b.String()
}

// metavarOf is the `quoted` word of f's usage, else a name for its type.
func metavarOf(f *flag.Flag) string {
	m, _ := flag.UnquoteUsage(f)
	if !strings.Contains(f.Usage, "`") {
		m = typeMetavar[m]
	}
	return m
}

func unquoted(f *flag.Flag) string {
	_, u := flag.UnquoteUsage(f)
	return u
}

// typeMetavar renames flag.UnquoteUsage's type names, for flags whose usage
// quotes no word.
var typeMetavar = map[string]string{
	"duration": "DURATION", "int": "N", "uint": "N", "float": "N", "string": "VALUE", "value": "VALUE",
}

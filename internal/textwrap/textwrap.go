// Package textwrap breaks help text into lines for the commands' --help.
package textwrap

import "strings"

// Wrap breaks text at spaces into lines of at most width bytes, each
// starting with indent spaces, joined by newlines (none after the last).
// A word longer than the width stands alone on its line.
func Wrap(text string, indent, width int) string {
	pad := strings.Repeat(" ", indent)
	var b strings.Builder
	line := pad
	for _, w := range strings.Fields(text) {
		if len(line) > indent && len(line)+1+len(w) > width {
			b.WriteString(line)
			b.WriteString("\n")
			line = pad
		}
		if len(line) > indent {
			line += " "
		}
		line += w
	}
	b.WriteString(line)
	return b.String()
}

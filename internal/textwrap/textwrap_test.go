package textwrap

import "testing"

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		text          string
		indent, width int
		want          string
	}{
		{"", 0, 10, ""},
		{"one", 0, 10, "one"},
		{"one two three", 0, 9, "one two\nthree"},
		{"  spaced   out  ", 0, 80, "spaced out"},
		{"one two three", 2, 9, "  one two\n  three"},
		{"averyveryverylongword short", 0, 8, "averyveryverylongword\nshort"},
		{"a b", 0, 3, "a b"},
	} {
		if got := Wrap(tc.text, tc.indent, tc.width); got != tc.want {
			t.Errorf("Wrap(%q, %d, %d) = %q, want %q", tc.text, tc.indent, tc.width, got, tc.want)
		}
	}
}

package cliflag

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func testSet() *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("data-dir", "./data", "`DIR` for state")
	fs.String("nats-url", "", "NATS server `URL`")
	fs.String("nats-listen", "127.0.0.1:4222", "embedded server `HOST:PORT`")
	fs.Duration("timeout", 30*time.Second, "give up after `DURATION`")
	fs.Bool("gc", true, "collect orphans")
	fs.Bool("verbose", false, "say more")
	return fs
}

func explain(args ...string) string {
	fs := testSet()
	return Explain(fs.Parse(args), fs, args, "t --help").Error()
}

func TestExplainNamesTheFlagAsTyped(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag --bogus; see t --help"},
		{[]string{"-bogus=1"}, "unknown flag -bogus; see t --help"},
		{[]string{"--data_dir", "x"}, "unknown flag --data_dir (did you mean --data-dir?); see t --help"},
		{[]string{"--Data-Dir", "x"}, "unknown flag --Data-Dir (did you mean --data-dir?); see t --help"},
		{[]string{"--timout", "1s"}, "unknown flag --timout (did you mean --timeout?); see t --help"},
		{[]string{"--nats-ur", "x"}, "unknown flag --nats-ur (did you mean --nats-url?); see t --help"},
		{[]string{"--nats", "x"}, "unknown flag --nats; see t --help"}, // two flags start so: no guess
		{[]string{"--data", "x"}, "unknown flag --data (did you mean --data-dir?); see t --help"},
		{[]string{"--nats-url"}, "flag --nats-url needs a value (--nats-url URL); see t --help"},
		{[]string{"--timeout", "soon"}, `invalid value "soon" for --timeout: parse error; see t --help`},
		{[]string{"--gc=maybe"}, `invalid boolean value "maybe" for --gc: parse error; see t --help`},
	} {
		if got := explain(tc.args...); got != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.args, got, tc.want)
		}
	}
}

func TestUsage(t *testing.T) {
	got := Usage(testSet())
	for _, want := range []string{
		"  --data-dir DIR\n      DIR for state (default ./data)\n",
		"  --nats-url URL\n      NATS server URL\n",
		"  --timeout DURATION\n      give up after DURATION (default 30s)\n",
		"  --gc\n      collect orphans (default true)\n",
		"  --verbose\n      say more\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Usage lacks %q:\n%s", want, got)
		}
	}
}

// Command reconciler is tunnelward's daemon: it ingests org lifecycle
// events from NATS JetStream into bbolt and converges the cloud to them.
//
//	reconciler                 run (embedded NATS, sandbox cloud, ./data)
//	reconciler status [ORG]    show org records (-o json)
//	reconciler plan [ORG]      dry run: what a reconcile would change (-o json)
//	reconciler replay          rebuild ./data/state.db from the stream
//
// Every setting comes from internal/config (flags > TUNNELWARD_* env >
// config file > defaults); run `reconciler --help` for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tunnelward/tunnelward/internal/cliflag"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/textwrap"
)

// command is one subcommand: its synopsis and help, generated into --help.
type command struct {
	name    string
	args    string // positional synopsis, e.g. "[ORG]"
	maxArgs int
	summary string
	detail  string
	output  bool // takes -o table|json
}

var commands = []command{
	{name: "run", summary: "ingest events into bbolt, reconcile the clouds, serve the admin API (the default)",
		detail: "Runs until SIGINT or SIGTERM, then finishes the open batch and in-flight reconciles and exits 0. " +
			"Without flags it runs against the sandbox: an embedded NATS server, the in-process cloud emulator and ./data. " +
			"The sandbox's cloud outlives a restart: it is kept in " + sandboxFile + " in the data dir; " +
			"to start the sandbox from an empty cloud, stop the reconciler and delete that file."},
	{name: "status", args: "[ORG]", maxArgs: 1, output: true,
		summary: "show org records: desired, observed, conditions, last error",
		detail: "Reads the state file read-only; while the daemon holds it, asks the daemon's admin API (--admin-listen) instead, " +
			"sending the admin token when one is set (--admin-token-file or TUNNELWARD_ADMIN_TOKEN, as for the daemon). " +
			"UPDATED is when the record last changed, by an event or the engine (changed_at; the event's own time is updated_at). " +
			"With ORG, a detail view follows the table."},
	{name: "plan", args: "[ORG]", maxArgs: 1, output: true,
		summary: "dry run: the changes a reconcile would make, per org and resource, with reasons; writes nothing",
		detail: "Reads the state file read-only (or the running daemon's admin API, with the admin token when one is set; " +
			"the daemon reuses an answer for " + planCacheTTL.String() + " and limits how often it computes one) and the clouds, and only reads. " +
			"Without ORG, every org is planned from one inventory listing and orphans are listed too. " +
			"Exit status (as terraform plan -detailed-exitcode): 0 no changes, 2 changes (or conflicts/orphans), 1 error, bad flags included."},
	{name: "replay", summary: "rebuild the state file from the whole ORG_EVENTS stream (stop the daemon first)",
		detail: "Reads the stream from sequence 1 into a fresh state file and swaps it in; the previous file is kept beside it. " +
			"Observed resource ids are carried over. Shows progress on a terminal."},
}

func findCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// getenv is the environment the configuration reads; tests replace it.
var getenv = os.Getenv

func main() {
	setMemoryLimit()
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// cmdContext is what a subcommand gets: the resolved configuration, its
// positional arguments and local flags, and where to write.
type cmdContext struct {
	cfg            config.Config
	args           []string
	output         string
	log            *slog.Logger
	stdout, stderr io.Writer
}

func statePath(c config.Config) string { return filepath.Join(c.DataDir, "state.db") }
func natsDir(c config.Config) string   { return filepath.Join(c.DataDir, "nats") }

// sandboxFile holds the sandbox's emulated cloud under the data dir;
// deleting it (the reconciler stopped) starts the sandbox from empty.
const sandboxFile = "sandbox-cloud.json"

func sandboxPath(c config.Config) string { return filepath.Join(c.DataDir, sandboxFile) }

func realMain(args []string, stdout, stderr io.Writer) int {
	return realMainEnv(args, getenv, stdout, stderr)
}

// realMainEnv is realMain with the environment the configuration reads
// given: a test that needs its own runs beside the others.
func realMainEnv(args []string, env func(string) string, stdout, stderr io.Writer) int {
	cmd, cx, code := parseCommand(args, env, stdout, stderr)
	if cx == nil {
		return code
	}
	switch cmd.name {
	case "run":
		return runCommand(cx)
	case "replay":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := replay(ctx, cx); err != nil {
			fmt.Fprintln(stderr, "reconciler replay:", err)
			return 1
		}
		return 0
	case "status":
		return status(cx)
	case "plan":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return planCommand(ctx, cx)
	}
	return 2
}

// parseCommand resolves the command, its flags and the configuration (the
// environment read through env). A nil
// cmdContext means "exit with code now" (help printed, or a usage or
// configuration error reported on stderr).
func parseCommand(args []string, env func(string) string, stdout, stderr io.Writer) (command, *cmdContext, int) {
	name, help := "run", "reconciler --help"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
		help = "reconciler " + name + " --help"
	}
	if name == "help" {
		fmt.Fprint(stdout, topUsage())
		return command{}, nil, 0
	}
	cmd, ok := findCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "reconciler: unknown command %q\n\n%s", name, commandList())
		return cmd, nil, 2
	}
	// plan's exit 2 means "changes": its usage errors exit 1, as terraform's.
	usageErr := 2
	if cmd.name == "plan" {
		usageErr = 1
	}

	fs := flag.NewFlagSet("reconciler "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, below
	loader := config.Register(fs)
	var output string
	if cmd.output {
		fs.StringVar(&output, "o", "table", "output `FORMAT`: table or json")
	}
	positional, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, commandUsage(cmd, fs))
		return cmd, nil, 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "reconciler %s: %v\n", cmd.name, cliflag.Explain(err, fs, args, help))
		return cmd, nil, usageErr
	}
	if len(positional) > cmd.maxArgs {
		fmt.Fprintf(stderr, "reconciler %s: unexpected arguments %q (usage: reconciler %s %s[flags])\n", cmd.name, positional, cmd.name, argsSynopsis(cmd))
		return cmd, nil, usageErr
	}
	if cmd.output && output != "table" && output != "json" {
		fmt.Fprintf(stderr, "reconciler %s: -o %q: want table or json\n", cmd.name, output)
		return cmd, nil, usageErr
	}
	cfg, err := loader.Load(env)
	if err != nil {
		// Every wrong setting at once, before anything starts.
		fmt.Fprintf(stderr, "reconciler %s: %v\n", cmd.name, err)
		return cmd, nil, usageErr
	}
	return cmd, &cmdContext{cfg: cfg, args: positional, output: output, stdout: stdout, stderr: stderr,
		log: slog.New(cfg.Log.Handler(stderr, isTerminal(stderr)))}, 0
}

func runCommand(cx *cmdContext) int {
	log := cx.log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
		// Shutdown must finish within 30 s; past that, exit anyway.
		time.Sleep(30 * time.Second)
		log.Error("shutdown took longer than 30s; exiting")
		os.Exit(1)
	}()
	log.Info("configuration", "config", cx.cfg)
	if err := run(ctx, cx.cfg, log); err != nil {
		var se *startError
		if errors.As(err, &se) {
			// One line per problem reads better than one long line.
			for _, p := range se.problems {
				log.Error("cannot start", "problem", p)
			}
			log.Error("reconciler failed", "err", fmt.Sprintf("%d start-up problem(s), listed above; nothing was started", len(se.problems)))
			return 1
		}
		log.Error("reconciler failed", "err", err)
		return 1
	}
	return 0
}

// parseInterleaved parses flags that may come before or after positional
// arguments (reconciler status acme -o json).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && config.IsTerminal(f)
}

func argsSynopsis(c command) string {
	if c.args == "" {
		return ""
	}
	return c.args + " "
}

func commandList() string {
	var b strings.Builder
	b.WriteString("Commands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-14s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	b.WriteString("  help           this text\n\nRun \"reconciler COMMAND --help\" for a command's flags.\n")
	return b.String()
}

// topUsage is `reconciler help`: the commands, then the settings every
// command accepts.
func topUsage() string {
	var b strings.Builder
	b.WriteString("Usage: reconciler [COMMAND] [ARGS] [flags]\n\n")
	b.WriteString("tunnelward's reconciler: org lifecycle events from NATS JetStream -> desired state in bbolt ->\n" +
		"Cloudflare Tunnel + DNS, SSM token parameter and EC2 instance per org.\n\n")
	b.WriteString(commandList())
	b.WriteString("\n")
	_, rest, _ := strings.Cut(config.Usage("reconciler"), "\n")
	b.WriteString("Settings (every command):\n")
	b.WriteString(rest)
	return b.String()
}

// commandUsage is `reconciler COMMAND --help`, generated from the command's
// FlagSet: its own flags, then every setting.
func commandUsage(c command, fs *flag.FlagSet) string {
	var b strings.Builder
	if c.name == "run" {
		b.WriteString(topUsage())
		return b.String()
	}
	fmt.Fprintf(&b, "Usage: reconciler %s %s[flags]\n\n", c.name, argsSynopsis(c))
	b.WriteString(textwrap.Wrap(strings.ToUpper(c.summary[:1])+c.summary[1:]+". "+c.detail, 0, 80) + "\n")
	b.WriteString("\n")
	settings := map[string]bool{}
	for _, n := range config.FlagNames() {
		settings[n] = true
	}
	var local []string
	fs.VisitAll(func(f *flag.Flag) {
		if settings[f.Name] {
			return
		}
		metavar, usage := flag.UnquoteUsage(f)
		local = append(local, fmt.Sprintf("  -%s %s\n      %s (default %s)\n", f.Name, metavar, usage, f.DefValue))
	})
	if len(local) > 0 {
		b.WriteString("\nCommand flags:\n")
		b.WriteString(strings.Join(local, ""))
	}
	_, rest, _ := strings.Cut(config.Usage("reconciler "+c.name), "\n")
	b.WriteString("\nSettings:\n")
	b.WriteString(rest)
	return b.String()
}

// Command reconciler is tunnelward's daemon: it ingests org lifecycle
// events from NATS JetStream into bbolt and (once the engine is wired)
// converges the cloud to them.
//
//	reconciler                 run (embedded NATS, sandbox cloud, ./data)
//	reconciler replay          rebuild ./data/state.db from the stream
//	reconciler status [ORG]    show org records (-o json)
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
)

const usage = `usage: reconciler [command] [flags]

commands:
  (none)          run: ingest events into bbolt, serve the admin API
  replay          rebuild the state file from the whole ORG_EVENTS stream (stop the daemon first)
  status [ORG]    show org records from the state file (-o json for JSON)

flags (every command):
  --data-dir DIR            state and embedded NATS store (default ./data)
  --nats-listen HOST:PORT   embedded NATS server address (default 127.0.0.1:4222)
  --nats-url URL            use this external NATS server instead of the embedded one
  --creds FILE              NATS credentials file for --nats-url
  --admin-listen HOST:PORT  admin HTTP server (default 127.0.0.1:8081)
  --sandbox-listen HOST:PORT  in-process cloud emulator address (default 127.0.0.1:8787)
  --cloud MODE              sandbox (default) | live | http://HOST:PORT of a cloudsim
  --reserved-slugs LIST     comma-separated reserved slugs (default: built-in list)
  --log-level LEVEL         debug|info|warn|error (default info)`

// options are the flags shared by every command.
type options struct {
	dataDir       string
	natsListen    string
	natsURL       string
	creds         string
	adminListen   string
	sandboxListen string
	cloud         string
	reservedSlugs string
	logLevel      string
	output        string // status only
}

func (o *options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.dataDir, "data-dir", "./data", "data directory")
	fs.StringVar(&o.natsListen, "nats-listen", "127.0.0.1:4222", "embedded NATS listen address")
	fs.StringVar(&o.natsURL, "nats-url", "", "external NATS server URL (disables the embedded server)")
	fs.StringVar(&o.creds, "creds", "", "NATS credentials file")
	fs.StringVar(&o.adminListen, "admin-listen", "127.0.0.1:8081", "admin HTTP listen address")
	fs.StringVar(&o.sandboxListen, "sandbox-listen", "127.0.0.1:8787", "sandbox cloud emulator listen address")
	fs.StringVar(&o.cloud, "cloud", "sandbox", "sandbox | live | URL of a cloudsim")
	fs.StringVar(&o.reservedSlugs, "reserved-slugs", "", "comma-separated reserved slugs (replaces the built-in list)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level")
}

func (o *options) statePath() string { return filepath.Join(o.dataDir, "state.db") }
func (o *options) natsDir() string   { return filepath.Join(o.dataDir, "nats") }

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("reconciler "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage) }
	var o options
	o.register(fs)
	if cmd == "status" {
		fs.StringVar(&o.output, "o", "table", "output: table | json")
	}
	// Flags may come before or after the status ORG argument.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "reconciler:", err)
		return 2
	}

	switch cmd {
	case "run":
		if len(positional) > 0 {
			fmt.Fprintf(stderr, "reconciler: unknown command %q\n\n%s\n", positional[0], usage)
			return 2
		}
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
		if err := run(ctx, o, log); err != nil {
			log.Error("reconciler failed", "err", err)
			return 1
		}
		return 0
	case "replay":
		if len(positional) > 0 {
			fmt.Fprintf(stderr, "reconciler replay: unexpected arguments %q\n", positional)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := replay(ctx, o, log, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "reconciler replay:", err)
			return 1
		}
		return 0
	case "status":
		if len(positional) > 1 {
			fmt.Fprintf(stderr, "reconciler status: at most one ORG, got %q\n", positional)
			return 2
		}
		org := ""
		if len(positional) == 1 {
			org = positional[0]
		}
		return status(o, org, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "reconciler: unknown command %q\n\n%s\n", cmd, usage)
		return 2
	}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

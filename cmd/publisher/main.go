// Command publisher validates org lifecycle events against the schemas and
// publishes them to the ORG_EVENTS stream with Nats-Msg-Id = event id.
//
//	publisher created --org acme --slug acme [--instance-type t4g.small] [--region eu-west-1] [--pool eu-2]
//	          [--takeover-type A|AAAA|CNAME (--takeover-content VALUE | --takeover-record-id ID)...]
//	publisher deleted --org acme [--reason "contract ended"]
//	publisher health-failed --org acme --reason "530 from edge" --observer probe-eu-1
//	publisher rotate-token --org acme [--reason "token leaked"]
//	publisher batch [--file events.jsonl]     (JSON lines; stdin by default)
//
// The connection flags (--nats-url, --creds, --timeout) may come before
// the command too: publisher --nats-url URL created ...
// `publisher COMMAND --help` lists a command's flags.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/cliflag"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/progress"
	"github.com/tunnelward/tunnelward/internal/textwrap"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitInvalid = 2
)

const exitStatus = "Exit status: 0 published (or a duplicate the stream dropped), 1 publishing failed, 2 invalid input (nothing published)."

// command is one publisher subcommand; --help is generated from it and its
// FlagSet.
type command struct {
	name     string
	synopsis string
	summary  string
	detail   string
}

var commands = []command{
	{"created", "--org ID --slug SLUG", "publish org.created: the org should exist at <slug>.<zone>",
		"To move an existing tenant onto its tunnel, name the DNS record already at <slug>.<zone> that tunnelward may " +
			"replace with its tunnel CNAME: --takeover-type and its current content (--takeover-content), its Cloudflare " +
			"record id (--takeover-record-id), or both. Without them a record tunnelward does not own is a conflict, " +
			"never overwritten."},
	{"deleted", "--org ID", "publish org.deleted: everything of the org should go", ""},
	{"health-failed", "--org ID --reason TEXT --observer NAME", "publish org.health_failed: an observer saw the org's tunnel fail", ""},
	{"rotate-token", "--org ID [--reason TEXT]", "publish org.token_rotation_requested: the org's tunnel token should be replaced",
		"The request is recorded on the org (desired token_rotation_seq in reconciler status -o json: the request's stream " +
			"sequence). A request for an org that does not exist (never created, or deleted) changes nothing."},
	{"batch", "[--file FILE | FILE]", "publish JSON-lines events from a file or stdin, in order",
		"Every line is validated before anything is published. Lines may carry only type and data; id, time, specversion, " +
			"source and subject are filled in (lines that name their id are idempotent across re-runs). " +
			"Progress (count, rate, ETA) is shown on stderr when it is a terminal."},
}

func topUsage() string {
	var b strings.Builder
	b.WriteString("Usage: publisher [connection flags] COMMAND [flags]\n\nValidates org lifecycle events against the schemas and publishes them to the ORG_EVENTS stream with Nats-Msg-Id = event id.\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-14s %s\n", c.name, c.summary)
	}
	b.WriteString("\nConnection flags (before or after the command; after wins):\n")
	b.WriteString(cliflag.Usage(connectionFlagSet(&common{})))
	b.WriteString("\nRun \"publisher COMMAND --help\" for a command's flags.\n" + exitStatus + "\n")
	return b.String()
}

func commandUsage(c command, fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: publisher %s [flags]\n\n%s%s.\n", c.name+" "+c.synopsis, strings.ToUpper(c.summary[:1]), c.summary[1:])
	if c.detail != "" {
		b.WriteString(textwrap.Wrap(c.detail, 0, 80) + "\n")
	}
	b.WriteString("\nFlags:\n")
	b.WriteString(cliflag.Usage(fs))
	b.WriteString("\n" + exitStatus + "\n")
	return b.String()
}

type common struct {
	natsURL, creds, id, source string
	timeout                    time.Duration
}

func (c *common) register(fs *flag.FlagSet, single bool) {
	c.registerConnection(fs)
	if single {
		fs.StringVar(&c.id, "id", "", "event `ID` (default: a new ULID); re-publishing an id is dropped by the stream as a duplicate")
	}
	fs.StringVar(&c.source, "source", "platform", "CloudEvents source `NAME`")
}

// registerConnection declares the connection flags, the ones accepted
// before the command too.
func (c *common) registerConnection(fs *flag.FlagSet) {
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	fs.StringVar(&c.natsURL, "nats-url", def, "NATS server `URL` ($NATS_URL when set)")
	fs.StringVar(&c.creds, "creds", "", "NATS user credentials `FILE`")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up after `DURATION`, retrying while NATS is unreachable")
}

func connectionFlagSet(c *common) *flag.FlagSet {
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.registerConnection(fs)
	return fs
}

// splitConnectionFlags takes the connection flags given before the command
// (publisher --nats-url URL created ..., as with the nats CLI) off args.
// The command's own parse reads them first, so the same flag after the
// command wins.
func splitConnectionFlags(args []string) (before, rest []string, err error) {
	fs := connectionFlagSet(&common{})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && commandFlag(name) {
			return nil, nil, fmt.Errorf("%s is a flag of the command: put it after the command (publisher COMMAND %s ...)", cliflag.Typed(name, args), cliflag.Typed(name, args))
		}
		return nil, nil, cliflag.Explain(err, fs, args, "publisher --help")
	}
	n := len(args) - fs.NArg()
	return args[:n], fs.Args(), nil
}

// eventFlags are the values of a command's own flags (pointers: set by
// declareFlags for the flags the command takes, nil for the others).
type eventFlags struct {
	org, slug, itype, region, pool, reason, observer, file *string
	takeoverType, takeoverContent, takeoverRecordID        *string
}

// declareFlags declares command's flags on fs.
func declareFlags(command string, fs *flag.FlagSet, c *common, e *eventFlags) {
	if command == "batch" {
		e.file = fs.String("file", "", "JSON-lines `FILE` (default: stdin; - is stdin)")
		c.register(fs, false)
		return
	}
	e.org = fs.String("org", "", "org `ID` (lowercase [a-z0-9-], 1..63)")
	if command == "created" {
		e.slug = fs.String("slug", "", "subdomain `LABEL` (one DNS label, not a reserved name)")
		e.itype = fs.String("instance-type", "", "EC2 instance `TYPE` for this org (default: the reconciler's)")
		e.region = fs.String("region", "", "AWS `REGION` for this org (default: the reconciler's)")
		e.pool = fs.String("pool", "", "Cloudflare pool `NAME` (account and zone) for this org (default: the reconciler's placement)")
		e.takeoverType = fs.String("takeover-type", "", "`TYPE` (A, AAAA or CNAME) of the existing DNS record at the org's hostname that tunnelward may replace; needs --takeover-content or --takeover-record-id")
		e.takeoverContent = fs.String("takeover-content", "", "current content of that record (an IPv4 or IPv6 address, or a hostname), as `VALUE`")
		e.takeoverRecordID = fs.String("takeover-record-id", "", "Cloudflare `ID` of that record (32 hex digits)")
	} else {
		e.reason = fs.String("reason", "", "why, as `TEXT`")
	}
	if command == "health-failed" {
		e.observer = fs.String("observer", "", "`NAME` of who observed the failure")
	}
	c.register(fs, true)
}

// commandFlag reports whether some command takes the flag.
func commandFlag(name string) bool {
	for _, c := range commands {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		declareFlags(c.name, fs, &common{}, &eventFlags{})
		if fs.Lookup(name) != nil {
			return true
		}
	}
	return false
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage())
		return exitInvalid
	}
	before, args, err := splitConnectionFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, topUsage())
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "publisher: %v\n", err)
		return exitInvalid
	}
	if len(args) == 0 {
		fmt.Fprintf(stderr, "publisher: no command after the connection flags\n\n%s", topUsage())
		return exitInvalid
	}
	if args[0] == "help" {
		fmt.Fprint(stdout, topUsage())
		return exitOK
	}
	var cmd command
	for _, c := range commands {
		if c.name == args[0] {
			cmd = c
		}
	}
	if cmd.name == "" {
		fmt.Fprintf(stderr, "publisher: unknown command %q\n\n%s", args[0], topUsage())
		return exitInvalid
	}
	v, err := events.NewValidator()
	if err != nil {
		fmt.Fprintln(stderr, "publisher:", err)
		return exitFailed
	}
	fs := flag.NewFlagSet("publisher "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c common
	parse := func() int {
		cmdArgs := slices.Concat(before, args[1:]) // connection flags given before the command first: the later ones win
		err := fs.Parse(cmdArgs)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, commandUsage(cmd, fs))
			return exitOK
		}
		if err != nil {
			fmt.Fprintf(stderr, "publisher %s: %v\n", cmd.name, cliflag.Explain(err, fs, cmdArgs, "publisher "+cmd.name+" --help"))
			return exitInvalid
		}
		return -1
	}

	var evs []events.Event
	var payloads [][]byte
	batch := false
	var e eventFlags
	declareFlags(cmd.name, fs, &c, &e)
	switch cmd.name {
	case "created", "deleted", "health-failed", "rotate-token":
		org, slug, itype, region, reason, observer := e.org, e.slug, e.itype, e.region, e.reason, e.observer
		if code := parse(); code >= 0 {
			return code
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "publisher %s: unexpected arguments %q\n", cmd.name, fs.Args())
			return exitInvalid
		}
		var data any
		switch cmd.name {
		case "created":
			takeover, err := takeoverFlags(e)
			if err != nil {
				fmt.Fprintf(stderr, "publisher %s: %v\nnothing published\n", cmd.name, err)
				return exitInvalid
			}
			data = events.Created{OrgID: *org, Slug: *slug, InstanceType: *itype, Region: *region, Pool: *e.pool, Takeover: takeover}
		case "deleted":
			data = events.Deleted{OrgID: *org, Reason: *reason}
		case "rotate-token":
			data = events.TokenRotationRequested{OrgID: *org, Reason: *reason}
		default:
			data = events.HealthFailed{OrgID: *org, Reason: *reason, Observer: *observer}
		}
		ev, err := events.New(data)
		if err != nil {
			fmt.Fprintln(stderr, "publisher:", err)
			return exitFailed
		}
		if c.id != "" {
			ev.ID = c.id
		}
		ev.Source = c.source
		b, err := v.Validate(ev)
		if err != nil {
			fmt.Fprintf(stderr, "publisher %s: %s\nnothing published\n", cmd.name, flagHint(err))
			return exitInvalid
		}
		evs, payloads = append(evs, ev), append(payloads, b)
	case "batch":
		batch = true
		if code := parse(); code >= 0 {
			return code
		}
		in, file := stdin, *e.file
		if file == "" && fs.NArg() == 1 {
			file = fs.Arg(0)
		} else if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "publisher batch: unexpected arguments %q\n", fs.Args())
			return exitInvalid
		}
		if file != "" && file != "-" {
			f, err := os.Open(file)
			if err != nil {
				fmt.Fprintln(stderr, "publisher batch:", err)
				return exitInvalid
			}
			defer f.Close()
			in = f
		}
		var errs []string
		evs, payloads, errs = readBatch(in, v, c.source)
		if len(errs) > 0 {
			for _, e := range errs {
				fmt.Fprintln(stderr, "publisher batch:", e)
			}
			fmt.Fprintf(stderr, "publisher batch: %d invalid line(s); nothing published\n", len(errs))
			return exitInvalid
		}
		if len(evs) == 0 {
			fmt.Fprintln(stderr, "publisher batch: no events in input; nothing published")
			return exitInvalid
		}
	}
	var bar *progress.Reporter
	if batch {
		bar = progress.ForTerminal(stderr, "publish", progress.Options{Unit: "events", Total: int64(len(evs))})
	}
	return publish(c, evs, payloads, stdout, stderr, bar)
}

// takeoverFlags builds data.takeover from created's --takeover-* flags: nil
// when none is given; the type and at least one of content and record id
// otherwise (the schema says so too; this names the flags).
func takeoverFlags(e eventFlags) (*events.Takeover, error) {
	t := events.Takeover{Type: *e.takeoverType, Content: *e.takeoverContent, RecordID: *e.takeoverRecordID}
	switch {
	case t == events.Takeover{}:
		return nil, nil
	case t.Type == "":
		given := "--takeover-content"
		if t.Content == "" {
			given = "--takeover-record-id"
		}
		return nil, fmt.Errorf("%s needs --takeover-type (A, AAAA or CNAME), the type of the record to take over", given)
	case t.Content == "" && t.RecordID == "":
		return nil, errors.New("--takeover-type needs the record it names: --takeover-content (its current content), --takeover-record-id (its Cloudflare id), or both")
	}
	return &t, nil
}

// connectHint says what to check when NATS cannot be used, naming the
// flags.
func connectHint(err error) string {
	var ce *broker.ConnectError
	if !errors.As(err, &ce) {
		return ""
	}
	switch ce.Reason {
	case broker.ReasonRefused, broker.ReasonNoHost, broker.ReasonTimeout:
		return "; is the NATS server running there? check --nats-url (default $NATS_URL)"
	case broker.ReasonAuth:
		return "; the server requires credentials: pass --creds FILE"
	}
	return ""
}

// flagHint names the command-line flag behind a field error.
func flagHint(err error) string {
	var ve *events.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	flags := map[string]string{
		"/data/org_id": "--org", "/subject": "--org", "/data/slug": "--slug", "/data/instance_type": "--instance-type",
		"/data/region": "--region", "/data/reason": "--reason", "/data/observer": "--observer", "/id": "--id", "/source": "--source",
		"/data/pool": "--pool", "/data/takeover": "--takeover-content or --takeover-record-id", "/data/takeover/type": "--takeover-type",
		"/data/takeover/content": "--takeover-content", "/data/takeover/record_id": "--takeover-record-id",
	}
	if f, ok := flags[ve.Field]; ok {
		return fmt.Sprintf("%s (flag %s)", err, f)
	}
	return err.Error()
}

// readBatch reads and validates every line; it fills in a missing id
// (new ULID), time (now), specversion and source before validating, so
// lines may carry just type and data. Lines that name their id are
// idempotent across re-runs of the same file.
func readBatch(r io.Reader, v *events.Validator, source string) ([]events.Event, [][]byte, []string) {
	var (
		evs      []events.Event
		payloads [][]byte
		errs     []string
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		// encoding/json would silently turn invalid UTF-8 into U+FFFD and
		// publish the mangled text: refuse it as ingest would.
		if !utf8.ValidString(text) {
			errs = append(errs, fmt.Sprintf("line %d: %v", line, &events.ValidationError{Code: events.CodeInvalidUTF8, Detail: "payload is not valid UTF-8"}))
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			errs = append(errs, fmt.Sprintf("line %d: not a JSON object: %v", line, err))
			continue
		}
		if m == nil { // the line is `null`
			errs = append(errs, fmt.Sprintf("line %d: not a JSON object: null", line))
			continue
		}
		setDefault(m, "specversion", events.SpecVersion)
		setDefault(m, "id", events.NewID())
		setDefault(m, "source", source)
		setDefault(m, "time", time.Now().UTC().Format(time.RFC3339Nano))
		data, _ := m["data"].(map[string]any)
		orgID, _ := data["org_id"].(string)
		setDefault(m, "subject", orgID)
		b, err := json.Marshal(m)
		if err != nil {
			errs = append(errs, fmt.Sprintf("line %d: %v", line, err))
			continue
		}
		typ, _ := m["type"].(string)
		subject, _ := events.Subject(typ, orgID) // "" for an unknown type: Decode names it
		ev, err := v.Decode(subject, b)
		if err != nil {
			errs = append(errs, fmt.Sprintf("line %d: %v", line, err))
			continue
		}
		evs, payloads = append(evs, ev), append(payloads, b)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Sprintf("line %d: read: %v", line+1, err))
	}
	return evs, payloads, errs
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func publish(c common, evs []events.Event, payloads [][]byte, stdout, stderr io.Writer, bar *progress.Reporter) int {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// An unreachable server is retried until --timeout, saying each time
	// what is wrong; refused credentials fail at once.
	nc, err := broker.Dial(ctx, c.natsURL, broker.DialOptions{Creds: c.creds, Name: "tunnelward-publisher", Log: log,
		OnRetry: func(r broker.Retry) {
			fmt.Fprintf(stderr, "publisher: %v; retrying in %s (gives up after --timeout %s)\n", r.Err, r.Wait.Round(time.Millisecond), c.timeout)
		}})
	if err != nil {
		fmt.Fprintf(stderr, "publisher: %v%s\nnothing published\n", err, connectHint(err))
		return exitFailed
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(stderr, "publisher:", err)
		return exitFailed
	}
	if err := broker.EnsureStreams(ctx, js, nil); err != nil {
		var ce *broker.ConflictError
		if errors.As(err, &ce) || ctx.Err() != nil {
			fmt.Fprintf(stderr, "publisher: %v\nnothing published\n", err)
			return exitFailed
		}
		// A publish-only account may not manage streams; publishing tells.
		fmt.Fprintf(stderr, "publisher: warning: could not check streams: %v\n", err)
	}
	above := func(fn func()) { fn() }
	if progress.IsTerminal(stdout) {
		above = bar.Above // stdout shares the terminal with the progress line
	}
	for i, ev := range evs {
		ack, err := broker.PublishPayload(ctx, js, ev.NATSSubject(), ev.ID, payloads[i])
		bar.Add(1)
		if err != nil {
			bar.Clear()
			fmt.Fprintf(stderr, "publisher: %v\n", err)
			if i > 0 {
				fmt.Fprintf(stderr, "publisher: %d of %d events were published before the failure; re-running the same input is safe within the %s duplicate window when the lines carry ids\n", i, len(evs), broker.DuplicateWindow)
			}
			return exitFailed
		}
		above(func() {
			if ack.Duplicate {
				fmt.Fprintf(stdout, "duplicate %s org=%s id=%s: already in stream %s at seq %d; the stream dropped this copy\n", ev.Type, ev.OrgID(), ev.ID, ack.Stream, ack.Sequence)
				return
			}
			fmt.Fprintf(stdout, "published %s org=%s id=%s stream=%s seq=%d\n", ev.Type, ev.OrgID(), ev.ID, ack.Stream, ack.Sequence)
		})
	}
	bar.Finish()
	return exitOK
}

// Command publisher validates org lifecycle events against the schemas and
// publishes them to the ORG_EVENTS stream with Nats-Msg-Id = event id.
//
//	publisher created --org acme --slug acme [--instance-type t4g.small] [--region eu-west-1]
//	publisher deleted --org acme [--reason "contract ended"]
//	publisher health-failed --org acme --reason "530 from edge" --observer probe-eu-1
//	publisher batch [--file events.jsonl]     (JSON lines; stdin by default)
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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
)

const usage = `usage: publisher <command> [flags]

commands:
  created        --org ID --slug SLUG [--instance-type T] [--region R]
  deleted        --org ID [--reason TEXT]
  health-failed  --org ID --reason TEXT --observer NAME
  batch          [--file FILE]   JSON-lines events (stdin if no file); all lines are
                 validated before anything is published

common flags:
  --nats-url URL     NATS server (default $NATS_URL or nats://127.0.0.1:4222)
  --creds FILE       NATS credentials file
  --timeout D        give up after D, retrying while NATS is unreachable (default 30s)
  --id ID            event id for created/deleted/health-failed (default: a new ULID);
                     re-publishing with the same id is dropped by the stream as a duplicate
  --source NAME      CloudEvents source (default "platform")

exit status: 0 published (or duplicate), 1 publishing failed, 2 invalid input`

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitInvalid = 2
)

type common struct {
	natsURL, creds, id, source string
	timeout                    time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	fs.StringVar(&c.natsURL, "nats-url", def, "NATS server URL")
	fs.StringVar(&c.creds, "creds", "", "NATS credentials file")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "overall timeout")
	fs.StringVar(&c.id, "id", "", "event id (default: new ULID)")
	fs.StringVar(&c.source, "source", "platform", "event source")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, usage)
		if len(args) == 0 {
			return exitInvalid
		}
		return exitOK
	}
	v, err := events.NewValidator()
	if err != nil {
		fmt.Fprintln(stderr, "publisher:", err)
		return exitFailed
	}
	cmd := args[0]
	fs := flag.NewFlagSet("publisher "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)

	var evs []events.Event
	var payloads [][]byte
	switch cmd {
	case "created", "deleted", "health-failed":
		var org, slug, itype, region, reason, observer string
		fs.StringVar(&org, "org", "", "org id")
		if cmd == "created" {
			fs.StringVar(&slug, "slug", "", "subdomain label")
			fs.StringVar(&itype, "instance-type", "", "EC2 instance type override")
			fs.StringVar(&region, "region", "", "AWS region override")
		} else {
			fs.StringVar(&reason, "reason", "", "why")
		}
		if cmd == "health-failed" {
			fs.StringVar(&observer, "observer", "", "who observed the failure")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return exitInvalid
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "publisher %s: unexpected arguments %q\n", cmd, fs.Args())
			return exitInvalid
		}
		var data any
		switch cmd {
		case "created":
			data = events.Created{OrgID: org, Slug: slug, InstanceType: itype, Region: region}
		case "deleted":
			data = events.Deleted{OrgID: org, Reason: reason}
		default:
			data = events.HealthFailed{OrgID: org, Reason: reason, Observer: observer}
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
			fmt.Fprintf(stderr, "publisher %s: %s\nnothing published\n", cmd, flagHint(err))
			return exitInvalid
		}
		evs, payloads = append(evs, ev), append(payloads, b)
	case "batch":
		var file string
		fs.StringVar(&file, "file", "", "JSON-lines file (default stdin)")
		if err := fs.Parse(args[1:]); err != nil {
			return exitInvalid
		}
		in := stdin
		if file == "" && fs.NArg() == 1 {
			file = fs.Arg(0)
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
	default:
		fmt.Fprintf(stderr, "publisher: unknown command %q\n\n%s\n", cmd, usage)
		return exitInvalid
	}
	return publish(c, evs, payloads, stdout, stderr)
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

func publish(c common, evs []events.Event, payloads [][]byte, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := broker.Connect(c.natsURL, c.creds, "tunnelward-publisher", log)
	if err != nil {
		fmt.Fprintln(stderr, "publisher:", err)
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
	for i, ev := range evs {
		ack, err := broker.PublishPayload(ctx, js, ev.NATSSubject(), ev.ID, payloads[i])
		if err != nil {
			fmt.Fprintf(stderr, "publisher: %v\n", err)
			if i > 0 {
				fmt.Fprintf(stderr, "publisher: %d of %d events were published before the failure; re-running the same input is safe within the %s duplicate window when the lines carry ids\n", i, len(evs), broker.DuplicateWindow)
			}
			return exitFailed
		}
		if ack.Duplicate {
			fmt.Fprintf(stdout, "duplicate %s org=%s id=%s: already in stream %s at seq %d; the stream dropped this copy\n", ev.Type, ev.OrgID(), ev.ID, ack.Stream, ack.Sequence)
			continue
		}
		fmt.Fprintf(stdout, "published %s org=%s id=%s stream=%s seq=%d\n", ev.Type, ev.OrgID(), ev.ID, ack.Stream, ack.Sequence)
	}
	return exitOK
}

package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// hostileCase is one entry of testdata/hostile/cases.json.
type hostileCase struct {
	File      string
	Payload   []byte
	Subject   string  `json:"subject"`
	Code      string  `json:"code"`
	Field     string  `json:"field"`
	Publisher bool    `json:"publisher"`
	MsgID     *string `json:"msg_id"`
	Note      string  `json:"note"`
}

// header is the Nats-Msg-Id the case is raw-published with ("" = none).
func (c hostileCase) header() string {
	if c.MsgID != nil {
		return *c.MsgID
	}
	return "hostile-" + strings.TrimSuffix(c.File, ".json")
}

func hostileCorpus(t testing.TB) []hostileCase {
	t.Helper()
	dir := filepath.Join("testdata", "hostile")
	b, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases map[string]hostileCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("cases.json: %v", err)
	}
	var out []hostileCase
	for name, c := range doc.Cases {
		c.File = name
		if c.Payload, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	// Every payload file is listed, so nothing in the corpus goes untested.
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files)-1 != len(out) {
		t.Fatalf("%d payload files but %d cases in cases.json", len(files)-1, len(out))
	}
	if len(out) < 30 {
		t.Fatalf("hostile corpus has %d cases, want at least 30", len(out))
	}
	return out
}

// TestHostileCorpusValidator runs each payload through the validator the
// publisher and ingest share: refused with the code and field expected.
func TestHostileCorpusValidator(t *testing.T) {
	t.Parallel()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range hostileCorpus(t) {
		if c.Code == ingest.CodeMissingMsgID || c.Code == ingest.CodeMsgIDMismatch {
			// The body is valid on purpose: only the header is wrong.
			if _, err := v.Decode(c.Subject, c.Payload); err != nil {
				t.Errorf("%s: body should be valid, got %v", c.File, err)
			}
			continue
		}
		_, err := v.Decode(c.Subject, c.Payload)
		var ve *events.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: accepted or untyped error: %v", c.File, err)
			continue
		}
		if ve.Code != c.Code || ve.Field != c.Field {
			t.Errorf("%s: got code %q field %q (%v), want %q %q", c.File, ve.Code, ve.Field, err, c.Code, c.Field)
		}
		if c.Field != "" && !strings.Contains(err.Error(), c.Field) {
			t.Errorf("%s: message %q does not name %s", c.File, err, c.Field)
		}
	}
}

// TestHostilePublisherRefuses runs the real publisher binary in batch mode on
// each payload: exit 2, the field named, nothing published. Its NATS URL is a
// port nobody listens on: a payload that got past validation would try to
// connect and exit 1 instead.
func TestHostilePublisherRefuses(t *testing.T) {
	t.Parallel()
	pub := binary(t, "publisher", "./cmd/publisher")
	refused, total := 0, 0
	for _, c := range hostileCorpus(t) {
		if !c.Publisher {
			continue
		}
		total++
		cmd := exec.Command(pub, "batch", "--file", filepath.Join("testdata", "hostile", c.File), "--nats-url", "nats://127.0.0.1:1", "--timeout", "2s")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s: publisher exit %v, want 2 (invalid input); output:\n%s", c.File, err, out)
			continue
		}
		msg := string(out)
		if strings.Contains(msg, "panic") || !strings.Contains(msg, "nothing published") {
			t.Errorf("%s: publisher did not refuse cleanly (a Go panic also exits 2):\n%s", c.File, msg)
			continue
		}
		if c.Field != "" && !strings.Contains(msg, c.Field) {
			t.Errorf("%s: output does not name field %s:\n%s", c.File, c.Field, msg)
			continue
		}
		// Whole-payload problems have no field: the message names the problem.
		if w, ok := map[string]string{events.CodeTooLarge: "limit", events.CodeInvalidUTF8: "UTF-8", events.CodeMalformedJSON: "JSON"}[c.Code]; ok && !strings.Contains(msg, w) {
			t.Errorf("%s: output does not say %q:\n%s", c.File, w, msg)
			continue
		}
		refused++
	}
	t.Logf("FIGURE hostile publisher: %d of %d refused with the field named", refused, total)
}

// TestHostileDeadLettered raw-publishes every payload past the publisher to
// orgs.<id>.<type> on a real nats-server, each followed by a valid event;
// ingest must dead-letter every bad one with its reason, code, field,
// original subject and sequence, while every valid one reaches bbolt.
func TestHostileDeadLettered(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := broker.Connect(srv.ClientURL(), "", "hostile-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := broker.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	v, _ := events.NewValidator()
	store, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	in, err := ingest.New(ctx, ingest.Config{JS: js, Store: store, Validator: v, BatchSize: 7, MaxWait: 100 * time.Millisecond, RetryDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = in.Run(rctx) })
	defer func() { stop(); wg.Wait() }()

	corpus := hostileCorpus(t)
	bySeq := map[uint64]hostileCase{}
	for i, c := range corpus {
		m := &nats.Msg{Subject: c.Subject, Data: c.Payload, Header: nats.Header{}}
		if id := c.header(); id != "" {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("raw publish %s: %v", c.File, err)
		}
		bySeq[ack.Sequence] = c
		org := fmt.Sprintf("valid-%02d", i)
		ev, _ := events.New(events.Created{OrgID: org, Slug: org})
		if _, err := broker.PublishEvent(ctx, js, v, ev); err != nil {
			t.Fatal(err)
		}
	}
	if !poll(30*time.Second, 20*time.Millisecond, func() bool {
		return in.Stats().DeadLettered >= uint64(len(corpus)) && in.Stats().Applied >= uint64(len(corpus))
	}) {
		t.Fatalf("ingest stats %+v, want %d dead-lettered and %d applied", in.Stats(), len(corpus), len(corpus))
	}
	orgs, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(orgs) != len(corpus) {
		ids := []string{}
		for _, o := range orgs {
			ids = append(ids, o.ID)
		}
		t.Fatalf("bbolt holds %d orgs %v, want exactly the %d valid ones", len(orgs), ids, len(corpus))
	}
	for i, o := range orgs {
		if want := fmt.Sprintf("valid-%02d", i); o.ID != want || o.Desired.Presence != state.Present {
			t.Fatalf("org %d is %s %s, want %s present", i, o.ID, o.Desired.Presence, want)
		}
	}

	dlq, err := js.OrderedConsumer(ctx, events.DLQStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < len(corpus) {
		m, err := dlq.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("read DLQ after %d of %d: %v", len(seen), len(corpus), err)
		}
		h := m.Headers()
		seq, _ := strconv.ParseUint(h.Get(ingest.HeaderOriginalSeq), 10, 64)
		c, ok := bySeq[seq]
		if !ok || seen[seq] {
			t.Fatalf("unexpected or repeated dead letter for seq %d: %v", seq, h)
		}
		seen[seq] = true
		if m.Subject() != events.DLQPrefix+c.Subject || h.Get(ingest.HeaderOriginalSubject) != c.Subject ||
			h.Get(ingest.HeaderCode) != c.Code || h.Get(ingest.HeaderField) != c.Field {
			t.Errorf("%s: dead letter on %s with code %q field %q subject %q, want %q %q %q",
				c.File, m.Subject(), h.Get(ingest.HeaderCode), h.Get(ingest.HeaderField), h.Get(ingest.HeaderOriginalSubject), c.Code, c.Field, c.Subject)
		}
		if r := h.Get(ingest.HeaderReason); r == "" || (c.Field != "" && !strings.Contains(r, c.Field)) {
			t.Errorf("%s: reason %q does not name %q", c.File, r, c.Field)
		}
		if string(m.Data()) != string(c.Payload) {
			t.Errorf("%s: dead letter payload differs from the original", c.File)
		}
	}
	info, err := js.Stream(ctx, events.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != uint64(len(corpus)) {
		t.Fatalf("DLQ holds %d messages, want %d", n, len(corpus))
	}
	t.Logf("FIGURE hostile dead-lettered: %d of %d, valid events applied: %d of %d", len(seen), len(corpus), len(orgs), len(corpus))
}

package broker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	e, err := StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := Connect(e.ClientURL(), "", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestEnsureStreamIdempotent(t *testing.T) {
	js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r1, err := EnsureStream(ctx, js, EventsStreamConfig())
	if err != nil || r1.Action != "created" {
		t.Fatalf("first: %+v %v", r1, err)
	}
	r2, err := EnsureStream(ctx, js, EventsStreamConfig())
	if err != nil || r2.Action != "unchanged" {
		t.Fatalf("second: %+v %v", r2, err)
	}
	s, _ := js.Stream(ctx, "ORG_EVENTS")
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.LimitsPolicy || cfg.Storage != jetstream.FileStorage || cfg.Duplicates != DuplicateWindow {
		t.Fatalf("config: %+v", cfg)
	}
	if err := EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, "ORG_EVENTS_DLQ"); err != nil {
		t.Fatalf("dlq stream: %v", err)
	}
}

func TestEnsureStreamRaisesDuplicateWindowAndWarnsOnLimits(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	cfg := EventsStreamConfig()
	cfg.Duplicates = 30 * time.Second
	cfg.MaxAge = time.Hour
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := EnsureStream(ctx, js, EventsStreamConfig())
	if err != nil || r.Action != "updated" || len(r.Warnings) != 1 {
		t.Fatalf("%+v %v", r, err)
	}
	s, _ := js.Stream(ctx, "ORG_EVENTS")
	if got := s.CachedInfo().Config; got.Duplicates != DuplicateWindow || got.MaxAge != time.Hour {
		t.Fatalf("dup window %s max age %s: operator's limit must stay, window must rise", got.Duplicates, got.MaxAge)
	}
}

func TestEnsureStreamReportsConflict(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	cfg := EventsStreamConfig()
	cfg.Retention = jetstream.WorkQueuePolicy
	cfg.Storage = jetstream.MemoryStorage
	cfg.Subjects = []string{"orgs.*.created"}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	_, err := EnsureStream(ctx, js, EventsStreamConfig())
	var ce *ConflictError
	if !errors.As(err, &ce) || len(ce.Diffs) != 3 {
		t.Fatalf("want conflict with 3 diffs, got %v", err)
	}
	s, _ := js.Stream(ctx, "ORG_EVENTS")
	if s.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
		t.Fatal("conflicting stream was overwritten")
	}
}

func TestStartEmbeddedPortInUse(t *testing.T) {
	e, err := StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	addr := e.ClientURL()[len("nats://"):]
	if _, err := StartEmbedded(addr, t.TempDir()); err == nil {
		t.Fatal("second server on the same port started")
	}
}

// A URL nats.go cannot parse is quoted in its error: the password in it is
// hidden before the error leaves Connect.
func TestConnectErrorRedactsURL(t *testing.T) {
	_, err := Connect("nats://app:hunter2Secret@127.0.0.1:abc", "", "test", nil)
	if err == nil || strings.Contains(err.Error(), "hunter2Secret") || !strings.Contains(err.Error(), "app:[redacted]@") {
		t.Fatalf("want an error with the password redacted, got %v", err)
	}
}

// Both descriptions are whole sentences within the server's limit, and the
// server stores them as written.
func TestStreamDescriptionsComplete(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{EventsStreamConfig(), DLQStreamConfig()} {
		d := cfg.Description
		if len(d) > server.JSMaxDescriptionLen {
			t.Errorf("%s: description is %d bytes, the server allows %d", cfg.Name, len(d), server.JSMaxDescriptionLen)
		}
		words := strings.Fields(d)
		if len(words) == 0 {
			t.Fatalf("%s: no description", cfg.Name)
		}
		// A sentence cut short ends on a word that needs another after it.
		switch last := words[len(words)-1]; last {
		case "from", "to", "of", "the", "a", "and", "or", "in", "with", "by", "for":
			t.Errorf("%s: description ends mid-sentence on %q: %q", cfg.Name, last, d)
		}
		if _, err := EnsureStream(ctx, js, cfg); err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Description; got != d {
			t.Errorf("%s: server holds description %q, want %q", cfg.Name, got, d)
		}
	}
	if d := EventsStreamConfig().Description; !strings.Contains(d, "replay rebuilds the state file") {
		t.Errorf("ORG_EVENTS description %q does not say what replay does with the history", d)
	}
}

// A stream created by an older build with the truncated description gets
// the current one at start; a description an operator wrote is kept.
func TestEnsureStreamUpdatesOwnDescription(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, have, want string
		updated          bool
	}{
		{"truncated", "tunnelward org lifecycle events (orgs.<org_id>.<event>); the history replay rebuilds state from", EventsStreamConfig().Description, true},
		{"none", "", EventsStreamConfig().Description, true},
		{"operator's", "platform events, owned by team infra", "platform events, owned by team infra", false},
		{"current", EventsStreamConfig().Description, EventsStreamConfig().Description, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := startJS(t)
			cfg := EventsStreamConfig()
			cfg.Description = tc.have
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			r, err := EnsureStream(ctx, js, EventsStreamConfig())
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Action == "updated" && slices.Contains(r.Updated, "description"); got != tc.updated {
				t.Errorf("result %+v: description updated %t, want %t", r, got, tc.updated)
			}
			s, err := js.Stream(ctx, cfg.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config.Description; got != tc.want {
				t.Errorf("description %q, want %q", got, tc.want)
			}
		})
	}
}

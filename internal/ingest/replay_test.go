package ingest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

func TestReplayEqualsLiveState(t *testing.T) {
	e := newEnv(t)
	in := e.ingester(t, nil)
	stop := run(t, in)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})
	e.publish(t, events.Created{OrgID: "globex", Slug: "globex", Region: "eu-west-1"})
	e.publish(t, events.Deleted{OrgID: "globex"})
	e.publish(t, events.Created{OrgID: "globex", Slug: "globex"})
	e.publish(t, events.Deleted{OrgID: "ghost"})
	e.publishRaw(t, "orgs.acme.created", []byte(`{"broken":`))
	e.publish(t, events.HealthFailed{OrgID: "nobody", Reason: "x", Observer: "p"})
	e.publish(t, events.TokenRotationRequested{OrgID: "acme", Reason: "leak"})
	e.publish(t, events.TokenRotationRequested{OrgID: "nobody"})
	_, last := e.publish(t, events.Created{OrgID: "initech", Slug: "initech", Pool: "eu-2",
		Takeover: &events.Takeover{Type: events.TakeoverCNAME, Content: "old-lb.example.com"}})
	waitFor(t, "live ingest", func() bool { o, _ := e.org(t, "initech"); return o.LastSeq == last.Sequence })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()
	// The engine recorded something; replay must keep it.
	if err := e.store.Update("acme", func(o *state.Org) error {
		o.Observed.TunnelID = "tun-1"
		o.HealthReports[0].Handled = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	live, err := e.store.List()
	if err != nil {
		t.Fatal(err)
	}

	// Replay refuses while the live file is open (a reconciler running).
	_, err = Replay(context.Background(), ReplayConfig{JS: e.js, Validator: e.v, Path: e.dbPath})
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("replay with the file locked: %v", err)
	}
	e.store.Close()
	e.store = nil

	var progress bytes.Buffer
	res, err := Replay(context.Background(), ReplayConfig{JS: e.js, Validator: e.v, Path: e.dbPath, Progress: &progress, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != last.Sequence || res.Invalid != 1 || res.Orgs != 4 || res.Changed != 0 || len(res.Lost) != 0 || !res.CarriedOK {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(progress.String(), "1 invalid skipped") {
		t.Fatalf("progress: %q", progress.String())
	}
	if _, err := os.Stat(res.Backup); err != nil {
		t.Fatalf("backup: %v", err)
	}
	rebuilt, err := state.Open(e.dbPath, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rebuilt.Close()
	got, _ := rebuilt.List()
	if len(got) != len(live) {
		t.Fatalf("%d orgs rebuilt, %d live", len(got), len(live))
	}
	for i := range live {
		l, r := live[i], got[i]
		if l.ID != r.ID || !l.Desired.Equal(r.Desired) || l.LastSeq != r.LastSeq || l.LastEventID != r.LastEventID || !l.UpdatedAt.Equal(r.UpdatedAt) ||
			len(l.HealthReports) != len(r.HealthReports) || l.Observed != r.Observed {
			t.Fatalf("org %s differs:\nlive    %+v\nreplay  %+v", l.ID, l, r)
		}
		for j := range l.HealthReports {
			if l.HealthReports[j] != r.HealthReports[j] {
				t.Fatalf("org %s report %d: %+v vs %+v", l.ID, j, l.HealthReports[j], r.HealthReports[j])
			}
		}
	}
	if g, _, _ := rebuilt.Get("globex"); g.Desired.Generation != 2 {
		t.Fatalf("globex generation %d", g.Desired.Generation)
	}
	if a, _, _ := rebuilt.Get("acme"); a.Desired.TokenRotationSeq == 0 {
		t.Fatalf("acme's rotation request not rebuilt: %+v", a.Desired)
	}
	if i, _, _ := rebuilt.Get("initech"); i.Desired.Pool != "eu-2" || i.Desired.Takeover == nil || i.Desired.Takeover.Content != "old-lb.example.com" {
		t.Fatalf("initech's pool and takeover not rebuilt: %+v", i.Desired)
	}
	// The rebuilt file knows how far it is applied, so a later start can
	// tell whether it is behind the consumer.
	if seq, known, err := rebuilt.AppliedThrough(); err != nil || !known || seq != last.Sequence {
		t.Fatalf("rebuilt applied-through = %d known=%v err=%v, want %d", seq, known, err, last.Sequence)
	}
}

func TestReplayRebuildsCorruptFile(t *testing.T) {
	e := newEnv(t)
	run(t, e.ingester(t, nil))
	_, ack := e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	waitFor(t, "ingested", func() bool { o, _ := e.org(t, "acme"); return o.LastSeq == ack.Sequence })
	e.store.Close()
	e.store = nil
	if err := os.WriteFile(e.dbPath, []byte(strings.Repeat("garbage!", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := state.Open(e.dbPath, state.Options{}); !errors.Is(err, state.ErrCorrupt) {
		t.Fatalf("corrupt file opened: %v", err)
	}
	res, err := Replay(context.Background(), ReplayConfig{JS: e.js, Validator: e.v, Path: e.dbPath})
	if err != nil || res.CarriedOK || res.Orgs != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	s, err := state.Open(e.dbPath, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if o, ok, _ := s.Get("acme"); !ok || o.Desired.Slug != "acme" {
		t.Fatalf("acme after replay: %+v", o)
	}
}

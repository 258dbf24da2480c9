package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// ReplayConfig configures Replay.
type ReplayConfig struct {
	JS        jetstream.JetStream
	Validator *events.Validator
	Path      string // the live state file, e.g. data/state.db
	Log       *slog.Logger
	// Progress, when set, receives a progress line about twice a second
	// (a terminal: the line is redrawn in place).
	Progress io.Writer
	// OnProgress, when set, is told the events read so far and the total
	// after every committed batch (for a rate/ETA display).
	OnProgress func(done, total uint64)
	BatchSize  int // events per transaction (default 1024)
}

// ReplayResult summarises a replay.
type ReplayResult struct {
	Events    uint64 // events read from the stream
	Invalid   uint64 // events skipped as invalid (they are in the DLQ)
	Orgs      int    // orgs in the rebuilt file
	Changed   int    // orgs whose desired state differs from the old file's
	Lost      []string
	Backup    string // where the old file was kept ("" if there was none)
	CarriedOK bool   // observed state was carried over from the old file
}

// Replay rebuilds the state file from the whole ORG_EVENTS stream into a
// fresh file and swaps it in atomically (rename). It holds the old file's
// lock throughout, so a reconciler cannot run meanwhile; a running one makes
// Replay fail at once. What the engine recorded (observed resource ids,
// conditions, remediations, handled flags) is carried over from the old
// file when it can still be read; otherwise the engine finds its resources
// again by name and tags.
func Replay(ctx context.Context, cfg ReplayConfig) (ReplayResult, error) {
	var res ReplayResult
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1024
	}
	var old *state.Store
	_, err := os.Stat(cfg.Path)
	if err == nil {
		old, err = state.Open(cfg.Path, state.Options{Timeout: 2 * time.Second})
	}
	switch {
	case errors.Is(err, state.ErrLocked):
		return res, fmt.Errorf("replay: %w", err)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		log.Warn("old state file unreadable; rebuilding without carrying observed state over", "path", cfg.Path, "err", err)
		old = nil
	}
	if old != nil {
		defer func() {
			if old != nil {
				_ = old.Close()
			}
		}()
	}

	stream, err := cfg.JS.Stream(ctx, events.Stream)
	if err != nil {
		return res, fmt.Errorf("replay: stream %s: %w", events.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("replay: stream %s info: %w", events.Stream, err)
	}
	last, total := info.State.LastSeq, info.State.Msgs

	tmp := cfg.Path + ".replay"
	_ = os.Remove(tmp)
	fresh, err := state.Open(tmp, state.Options{})
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	freshClosed := false
	defer func() {
		if !freshClosed {
			_ = fresh.Close()
			_ = os.Remove(tmp)
		}
	}()

	if total > 0 {
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			return res, fmt.Errorf("replay: ordered consumer on %s: %w", events.Stream, err)
		}
		var (
			facts    []state.Fact
			lastDraw time.Time
			seq      uint64
			through  uint64 // last seq read and applied or skipped as invalid
		)
		flush := func() error {
			if len(facts) == 0 && through == 0 {
				return nil
			}
			// The mark lets ingest tell later whether this file is behind
			// the durable consumer (rewind.go).
			if _, err := fresh.ApplyThrough(facts, through); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			facts = facts[:0]
			return nil
		}
		for seq < last {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("replay interrupted at seq %d of %d: %w (the live file is untouched)", seq, last, err)
			}
			batch, err := collect(cons.FetchNoWait(cfg.BatchSize))
			if err == nil && len(batch) == 0 {
				batch, err = collect(cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second)))
			}
			if err != nil && len(batch) == 0 {
				return res, fmt.Errorf("replay: read %s at seq %d of %d: %w", events.Stream, seq, last, err)
			}
			if len(batch) == 0 {
				log.Warn("stream ended before its last sequence (messages expired meanwhile?)", "seq", seq, "last", last)
				break
			}
			for _, m := range batch {
				md, err := m.Metadata()
				if err != nil {
					return res, fmt.Errorf("replay: %w", err)
				}
				seq = md.Sequence.Stream
				if seq > last {
					break // published after the replay started: the live consumer applies it
				}
				res.Events++
				through = seq
				ev, err := decodeMsg(cfg.Validator, m.Subject(), m.Headers(), m.Data())
				if err != nil {
					res.Invalid++
					continue
				}
				facts = append(facts, ToFact(ev, seq))
			}
			if err := flush(); err != nil {
				return res, err
			}
			if cfg.OnProgress != nil {
				cfg.OnProgress(res.Events, total)
			}
			if cfg.Progress != nil && time.Since(lastDraw) > 500*time.Millisecond {
				lastDraw = time.Now()
				fmt.Fprintf(cfg.Progress, "\rreplay: %d/%d events (seq %d/%d) ", res.Events, total, seq, last)
			}
		}
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\rreplay: %d/%d events (seq %d/%d), %d invalid skipped\n", res.Events, total, seq, last, res.Invalid)
		}
	}

	if old != nil {
		if err := carryOver(old, fresh, &res); err != nil {
			return res, err
		}
		res.CarriedOK = true
	}
	orgs, err := fresh.List()
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	res.Orgs = len(orgs)
	if err := fresh.Close(); err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	freshClosed = true

	// Keep the old file beside the new one, then swap atomically.
	if _, err := os.Stat(cfg.Path); err == nil {
		res.Backup = fmt.Sprintf("%s.pre-replay-%s", cfg.Path, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Link(cfg.Path, res.Backup); err != nil {
			return res, fmt.Errorf("replay: keep old state file as %s: %w", res.Backup, err)
		}
	}
	if err := os.Rename(tmp, cfg.Path); err != nil {
		return res, fmt.Errorf("replay: swap %s into %s: %w", tmp, cfg.Path, err)
	}
	if d, err := os.Open(filepath.Dir(cfg.Path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return res, nil
}

// carryOver copies what the engine recorded from the old file into the
// rebuilt one, and counts orgs whose desired state changed or vanished.
func carryOver(old, fresh *state.Store, res *ReplayResult) error {
	oldOrgs, err := old.List()
	if err != nil {
		return fmt.Errorf("replay: read old state: %w", err)
	}
	for _, o := range oldOrgs {
		n, ok, err := fresh.Get(o.ID)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		if !ok {
			res.Lost = append(res.Lost, o.ID)
			continue
		}
		if !sameDesired(o, n) {
			res.Changed++
		}
		handled := map[string]bool{}
		for _, r := range o.HealthReports {
			handled[r.EventID] = r.Handled
		}
		err = fresh.Update(o.ID, func(x *state.Org) error {
			x.Observed, x.Conditions, x.Remediations = o.Observed, o.Conditions, o.Remediations
			x.LastError, x.LastErrorAt = o.LastError, o.LastErrorAt
			for i := range x.HealthReports {
				x.HealthReports[i].Handled = handled[x.HealthReports[i].EventID]
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("replay: carry over org %s: %w", o.ID, err)
		}
	}
	return nil
}

func sameDesired(a, b state.Org) bool {
	if !a.Desired.Equal(b.Desired) || a.LastSeq != b.LastSeq || a.LastEventID != b.LastEventID || len(a.HealthReports) != len(b.HealthReports) {
		return false
	}
	for i := range a.HealthReports {
		x, y := a.HealthReports[i], b.HealthReports[i]
		if x.EventID != y.EventID || x.Seq != y.Seq {
			return false
		}
	}
	return true
}

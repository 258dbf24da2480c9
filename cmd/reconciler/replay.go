package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/progress"
	"github.com/tunnelward/tunnelward/internal/state"
)

// replay rebuilds the state file from the stream. With the embedded server
// it starts it on the data dir (the daemon must be stopped: it holds both
// the state file and the NATS store).
func replay(ctx context.Context, cx *cmdContext) error {
	c, log, stdout := cx.cfg, cx.log, cx.stdout
	// Fail fast, before starting NATS, if the daemon holds the state file.
	if s, err := state.Open(statePath(c), state.Options{Timeout: time.Second}); err == nil {
		_ = s.Close()
	} else if errors.Is(err, state.ErrLocked) {
		return err
	}
	url := c.NATS.URL
	if url == "" {
		srv, err := broker.StartEmbedded(c.NATS.Listen, natsDir(c))
		if err != nil {
			return fmt.Errorf("%w (is the reconciler still running? stop it before replay)", err)
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
	}
	nc, err := connectNATS(ctx, url, c.NATS, "tunnelward-replay", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	v, err := newValidator(c)
	if err != nil {
		return err
	}
	// Count, rate and ETA on a terminal; nothing in a pipe.
	bar := progress.ForTerminal(cx.stderr, "replay", progress.Options{Unit: "events"})
	start := time.Now()
	res, err := ingest.Replay(ctx, ingest.ReplayConfig{JS: js, Validator: v, Path: statePath(c), Log: log,
		OnProgress: func(done, total uint64) {
			bar.SetTotal(int64(total))
			bar.Set(int64(done))
		}})
	if err != nil {
		bar.Clear()
		return err
	}
	bar.Finish()
	fmt.Fprintf(stdout, "replayed %d events (%d invalid skipped) into %s in %s: %d orgs, %d with changed desired state\n",
		res.Events, res.Invalid, statePath(c), time.Since(start).Round(time.Millisecond), res.Orgs, res.Changed)
	if res.Backup != "" {
		fmt.Fprintf(stdout, "previous file kept as %s\n", res.Backup)
	}
	if !res.CarriedOK && res.Backup != "" {
		fmt.Fprintln(stdout, "previous file was unreadable: observed resource ids were not carried over; the engine finds resources again by name and tags")
	}
	if len(res.Lost) > 0 {
		fmt.Fprintf(stdout, "warning: %d orgs of the previous file have no events left in the stream (stream limits?): %s\n", len(res.Lost), strings.Join(res.Lost, ", "))
	}
	return nil
}

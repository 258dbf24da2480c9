package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// replay rebuilds the state file from the stream. With the embedded server
// it starts it on the data dir (the daemon must be stopped: it holds both
// the state file and the NATS store).
func replay(ctx context.Context, o options, log *slog.Logger, stdout, stderr io.Writer) error {
	// Fail fast, before starting NATS, if the daemon holds the state file.
	if s, err := state.Open(o.statePath(), state.Options{Timeout: time.Second}); err == nil {
		_ = s.Close()
	} else if errors.Is(err, state.ErrLocked) {
		return err
	}
	url := o.natsURL
	if url == "" {
		srv, err := broker.StartEmbedded(o.natsListen, o.natsDir())
		if err != nil {
			return fmt.Errorf("%w (is the reconciler still running? stop it before replay)", err)
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
	}
	nc, err := broker.Connect(url, o.creds, "tunnelward-replay", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var opts []events.Option
	if o.reservedSlugs != "" {
		opts = append(opts, events.WithReservedSlugs(strings.Split(o.reservedSlugs, ",")))
	}
	v, err := events.NewValidator(opts...)
	if err != nil {
		return err
	}
	var progress io.Writer
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			progress = stderr
		}
	}
	start := time.Now()
	res, err := ingest.Replay(ctx, ingest.ReplayConfig{JS: js, Validator: v, Path: o.statePath(), Log: log, Progress: progress})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %d events (%d invalid skipped) into %s in %s: %d orgs, %d with changed desired state\n",
		res.Events, res.Invalid, o.statePath(), time.Since(start).Round(time.Millisecond), res.Orgs, res.Changed)
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

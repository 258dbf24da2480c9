package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// TestBrokerRestart kills the nats-server process (SIGKILL) while events
// are being published and restarts it on the same store: every event the
// stream acknowledged is applied exactly once, the reconciler process
// reconnects by itself and its /readyz shows the outage, and publishers
// running during the outage either succeed after it or fail loudly.
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{simArgs: fastWorld})
	pub := binary(t, "publisher", "./cmd/publisher")
	w.startReconciler()
	w.waitReady()
	w.create("steady")
	w.create("rotor")
	if p := w.waitConverged(45 * time.Second); p != "" {
		t.Fatal(p)
	}
	recPID := w.rec.cmd.Process.Pid

	// A stream of events: creates of new orgs and health reports on one org.
	var (
		mu                 sync.Mutex
		acked, failed, hfs int
		stop               = make(chan struct{})
		wg                 sync.WaitGroup
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Mostly health reports (cheap to remediate: a false alarm),
			// and a new org now and then.
			var data any = events.HealthFailed{OrgID: "steady", Reason: fmt.Sprintf("probe %d", i), Observer: "reliability"}
			if i%10 == 0 && i < 20 {
				data = events.Created{OrgID: fmt.Sprintf("flow-%03d", i), Slug: fmt.Sprintf("flow-%03d", i)}
			}
			ev, _ := events.New(data)
			// Long enough to outlast the outage; a publish whose ack was lost
			// with the killed broker gives up after it (counted as failed)
			// instead of holding the flow up for a minute.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			ack, err := broker.PublishEvent(ctx, w.js, w.v, ev)
			cancel()
			mu.Lock()
			if err != nil {
				failed++
			} else {
				acked++
				if ev.HealthFailed != nil {
					hfs++
				}
				w.record(ev, ack.Sequence)
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})
	waitFor(t, 20*time.Second, "events flowing", func() bool { mu.Lock(); defer mu.Unlock(); return acked >= 10 })

	// A token rotation asked for just before the broker dies: it runs
	// across the outage and is recorded once (convergence waits for it).
	rotSeq := w.publish(events.TokenRotationRequested{OrgID: "rotor", Reason: "broker restart"})
	w.nats.kill()
	outageStart := time.Now()
	var ready struct {
		Status string
		Failed []string
	}
	waitFor(t, 20*time.Second, "/readyz to show the outage", func() bool {
		code, body, _ := httpBody("http://" + w.adminAddr + "/readyz")
		_ = json.Unmarshal([]byte(body), &ready)
		return code == 503 && strings.Contains(body, "nats")
	})
	// A publisher with a short timeout fails loudly; one with a long timeout
	// keeps retrying through the outage.
	out, err := exec.Command(pub, "created", "--org", "during", "--slug", "during", "--nats-url", w.natsURL(), "--timeout", "2s").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "publish") {
		t.Fatalf("publisher during the outage: %v, want exit 1 naming the failed publish:\n%s", err, out)
	}
	patient := exec.Command(pub, "created", "--org", "patient", "--slug", "patient", "--id", "patient-1", "--nats-url", w.natsURL(), "--timeout", "60s")
	patientOut := &lockedBuilder{}
	patient.Stdout, patient.Stderr = patientOut, patientOut
	if err := patient.Start(); err != nil {
		t.Fatal(err)
	}
	// The broker comes back once the patient publisher has met the outage
	// (a failed attempt, and it retries).
	waitFor(t, 20*time.Second, "the patient publisher retrying", func() bool { return strings.Contains(patientOut.String(), "retrying in") })
	w.startNATS()
	outage := time.Since(outageStart)
	if err := patient.Wait(); err != nil || !strings.Contains(patientOut.String(), "published") {
		t.Fatalf("patient publisher: %v\n%s", err, patientOut.String())
	}
	w.mu.Lock() // the other publishers record into w concurrently
	w.present["patient"], w.events = true, w.events+1
	w.mu.Unlock()
	waitFor(t, 30*time.Second, "reconciler ready again", func() bool { return httpStatus("http://"+w.adminAddr+"/readyz") == 200 })
	if !w.rec.running() || w.rec.cmd.Process.Pid != recPID {
		t.Fatal("the reconciler did not survive the broker outage")
	}
	// More events after the restart.
	mu.Lock()
	ackedBefore := acked
	mu.Unlock()
	waitFor(t, 45*time.Second, "events acked after the restart", func() bool { mu.Lock(); defer mu.Unlock(); return acked >= ackedBefore+10 })
	close(stop)
	wg.Wait()

	// Every acknowledged event applied, once.
	m := func() map[string]state.Org { o, _ := w.orgs(); return o }
	waitFor(t, 30*time.Second, "patient applied", func() bool { return m()["patient"].LastSeq > 0 })
	w.mu.Lock()
	w.lastSeq["patient"] = m()["patient"].LastSeq
	w.mu.Unlock()
	if p := w.waitConverged(90 * time.Second); p != "" {
		t.Fatalf("after the broker restart: %s\n%s", p, w.rec.goroutines())
	}
	steady := m()["steady"]
	wantReports := min(hfs, 20) // the store keeps the newest 20
	if len(steady.HealthReports) != wantReports {
		t.Fatalf("steady has %d health reports, want %d (one per acknowledged event)", len(steady.HealthReports), wantReports)
	}
	ids := map[string]bool{}
	for _, r := range steady.HealthReports {
		if ids[r.EventID] {
			t.Fatalf("health report %s applied twice", r.EventID)
		}
		ids[r.EventID] = true
	}
	s, err := w.js.Stream(context.Background(), events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	// steady's and rotor's created, the rotation request, every acked
	// event and the patient publisher's one.
	if want := uint64(3 + acked + 1); info.State.Msgs != want {
		t.Fatalf("stream holds %d events, want %d: a retried publish was stored twice or an acked one lost", info.State.Msgs, want)
	}
	if !strings.Contains(w.rec.log(), "reconnected") {
		t.Fatalf("reconciler log does not show the reconnect")
	}
	if r := m()["rotor"]; r.Desired.TokenRotationSeq != rotSeq || r.Observed.TokenRotatedSeq != rotSeq || r.Observed.TokenRotatedAt.IsZero() {
		t.Fatalf("rotation request seq %d: desired %d, rotated %d at %v", rotSeq, r.Desired.TokenRotationSeq,
			r.Observed.TokenRotatedSeq, r.Observed.TokenRotatedAt)
	}
	if _, body, err := httpBody("http://" + w.adminAddr + "/metrics"); err != nil || !strings.Contains(body, `tunnelward_token_rotations_total{trigger="requested"} 1`) {
		t.Fatalf("want exactly one rotation counted (%v); metrics:\n%s", err, grepLines(body, "token_rotations"))
	}
	t.Logf("FIGURE broker restart: outage %s; %d events acked by the stream (%d publishes gave up), all applied once, 0 lost, 0 duplicated; /readyz during the outage: 503 (%s: %v)",
		outage.Round(100*time.Millisecond), acked, failed, ready.Status, ready.Failed)
}

// lockedBuilder collects a child process's output while the test reads it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

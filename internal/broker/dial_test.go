package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Nothing listens: every attempt is reported (URL, cause, next wait, which
// grows), and the final error names the URL, the cause and that it gave up.
func TestDialRefusedSaysWhereAndWhy(t *testing.T) {
	url := "nats://app:hunter2Secret@" + closedAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var retries []Retry
	_, err := Dial(ctx, url, DialOptions{Name: "test", OnRetry: func(r Retry) { retries = append(retries, r) }})
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Reason != ReasonRefused || !ce.Retryable() {
		t.Fatalf("want a refused *ConnectError, got %#v", err)
	}
	for _, want := range []string{"cannot reach NATS at nats://app:[redacted]@127.0.0.1:", "connection refused", "gave up after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2Secret") {
		t.Errorf("error leaks the password: %v", err)
	}
	if len(retries) < 2 {
		t.Fatalf("want every failed attempt reported, got %d", len(retries))
	}
	if r := retries[0]; r.Attempt != 1 || r.Err.Reason != ReasonRefused || r.Wait != 500*time.Millisecond {
		t.Errorf("first retry: %+v", r)
	}
	if retries[1].Wait <= retries[0].Wait {
		t.Errorf("no backoff: waits %s then %s", retries[0].Wait, retries[1].Wait)
	}
}

// A server that refuses the credentials is not retried: the answer would
// not change.
func TestDialAuthFailsAtOnce(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, Username: "app", Password: "right", NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	addr := srv.Addr().String()
	for _, url := range []string{"nats://" + addr, "nats://app:wrongSecret@" + addr} {
		retried := 0
		_, err := Dial(context.Background(), url, DialOptions{Name: "test", OnRetry: func(Retry) { retried++ }})
		var ce *ConnectError
		if !errors.As(err, &ce) || ce.Reason != ReasonAuth || retried != 0 {
			t.Fatalf("%s: want an authorization *ConnectError without retries, got %v (%d retries)", url, err, retried)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") || strings.Contains(err.Error(), "wrongSecret") {
			t.Errorf("%s: %v", url, err)
		}
	}
	nc, err := Dial(context.Background(), "nats://app:right@"+addr, DialOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestClassify(t *testing.T) {
	for err, want := range map[error]Reason{
		&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nats.internal", IsNotFound: true}}: ReasonNoHost,
		&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}:                                                      ReasonTimeout,
		fmt.Errorf("x: %w", errors.New("other")):                                                                               ReasonOther,
	} {
		if got := classify(err); got != want {
			t.Errorf("classify(%v) = %d, want %d", err, got, want)
		}
	}
}

// A long outage logs a handful of lines, not one per reconnect attempt.
func TestReconnectLogBacksOff(t *testing.T) {
	var b strings.Builder
	var mu sync.Mutex
	now := time.Unix(0, 0)
	rl := &reconnectLog{log: slog.New(slog.NewTextHandler(&lockedBuilder{b: &b, mu: &mu}, nil)), url: "nats://app:[redacted]@h:4222", now: func() time.Time { return now }}
	for i := 0; i < 2400; i++ { // ten minutes at one attempt per 250 ms
		rl.failed(errors.New("dial tcp 10.0.0.1:4222: connect: connection refused"))
		now = now.Add(250 * time.Millisecond)
	}
	lines := strings.Count(b.String(), "\n")
	if lines < 5 || lines > 20 || !strings.Contains(b.String(), "connection refused") || !strings.Contains(b.String(), "nats://app:[redacted]@h:4222") {
		t.Fatalf("%d lines:\n%s", lines, b.String())
	}
	rl.reset()
	b.Reset()
	rl.failed(errors.New("refused again"))
	if !strings.Contains(b.String(), "failed_attempts=1") {
		t.Fatalf("after a reconnect the next outage is logged at once: %q", b.String())
	}
}

type lockedBuilder struct {
	b  *strings.Builder
	mu *sync.Mutex
}

func (w *lockedBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/daemon"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The scale figure runs the reconciler's startup path in a child process
// (this same binary, told by environment), so its memory is its own:
// RSS is read from /proc/self/status, the Go heap from the runtime.
const (
	childEnv   = "TUNNELWARD_BENCH_CHILD"
	childDB    = "TUNNELWARD_BENCH_DB"
	childSim   = "TUNNELWARD_BENCH_SIM"
	childTouch = "TUNNELWARD_BENCH_TOUCH"
	// childStream replaces EnqueueAll by a what-if: the same selection made
	// while streaming the records (state.ForEach) instead of listing them
	// all (state.List), to show what that list costs in memory.
	childStream = "TUNNELWARD_BENCH_STREAM"
)

// IsChild reports whether this process is the scale figure's child.
func IsChild() bool { return os.Getenv(childEnv) == "scale" }

// childResult is what the child prints, one JSON line.
type childResult struct {
	Orgs       int    `json:"orgs"`
	StartupNS  int64  `json:"startup_ns"`
	RSS        uint64 `json:"rss"` // after startup, bytes
	TouchedRSS uint64 `json:"rss_touched"`
	HWM        uint64 `json:"hwm"`      // peak RSS of the process, bytes
	OpenHWM    uint64 `json:"hwm_open"` // peak RSS right after state.Open
	OpenNS     int64  `json:"open_ns"`
	Anon       uint64 `json:"rss_anon"`
	File       uint64 `json:"rss_file"`
	HeapSys    uint64 `json:"heap_sys"`
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapTouch  uint64 `json:"heap_touched"`
	TouchNS    int64  `json:"touch_ns"`
	Err        string `json:"err,omitempty"`
}

// RunChild is the child's main: start the engine the way the reconciler
// does (open bbolt, which checks every record; build the provider clients
// and the engine; queue every org), then report memory; then, when asked,
// apply one event to every org in batches as ingest would (which fills the
// state package's record cache) and report memory again.
func RunChild() int {
	res := runChild()
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.Err != "" {
		return 1
	}
	return 0
}

func runChild() (res childResult) {
	fail := func(err error) childResult { res.Err = err.Error(); return res }
	t0 := time.Now()
	st, err := state.Open(os.Getenv(childDB), state.Options{Timeout: 10 * time.Second})
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	res.OpenNS = int64(time.Since(t0))
	if _, res.OpenHWM, err = procMem(); err != nil {
		return fail(err)
	}
	simURL := os.Getenv(childSim)
	// The daemon's own wiring, as `reconciler --cloud URL` builds it.
	// One unlimited pool: the figure is the engine's, not placement's.
	poolArgs, err := writePools(filepath.Dir(os.Getenv(childDB)), &cloudsim.Config{}, 1)
	if err != nil {
		return fail(err)
	}
	c, err := config.Parse(append([]string{"--cloud", simURL}, poolArgs...), func(string) string { return "" })
	if err != nil {
		return fail(err)
	}
	ecfg, clouds, err := daemon.EngineConfig(context.Background(), c, simURL, slog.New(slog.DiscardHandler), nil, daemon.Knobs{})
	if err != nil {
		return fail(err)
	}
	eng, err := reconcile.New(ecfg, clouds, st, nil)
	if err != nil {
		return fail(err)
	}
	if os.Getenv(childStream) != "" {
		err = st.ForEach(func(o state.Org) error {
			if o.Desired.Presence == state.Deleted && o.Observed.DeleteDone {
				return nil
			}
			if o.Desired.Presence != state.Deleted && reconcile.IsTrue(o, state.CondReady) {
				return nil
			}
			eng.Enqueue(o.ID)
			res.Orgs++
			return nil
		})
	} else {
		res.Orgs, err = eng.EnqueueAll(true) // as Run does with the sweep on
	}
	if err != nil {
		return fail(err)
	}
	res.StartupNS = int64(time.Since(t0))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapInuse = ms.HeapInuse
	if res.RSS, _, err = procMem(); err != nil {
		return fail(err)
	}
	if os.Getenv(childTouch) != "" {
		t1 := time.Now()
		var facts []state.Fact
		seq := uint64(1 << 40) // newer than anything preloaded
		err := st.ForEach(func(o state.Org) error {
			seq++
			facts = append(facts, state.Fact{Seq: seq, EventID: fmt.Sprintf("touch-%d", seq), Type: state.FactHealthFailed,
				OrgID: o.ID, Time: time.Now(), Reason: "bench: touch", Observer: "bench"})
			return nil
		})
		if err != nil {
			return fail(err)
		}
		for i := 0; i < len(facts); i += 1024 {
			if _, err := st.Apply(facts[i:min(i+1024, len(facts))]); err != nil {
				return fail(err)
			}
		}
		facts = nil
		res.TouchNS = int64(time.Since(t1))
		runtime.GC()
		runtime.ReadMemStats(&ms)
		res.HeapTouch = ms.HeapInuse
		if res.TouchedRSS, _, err = procMem(); err != nil {
			return fail(err)
		}
	}
	_, res.HWM, err = procMem()
	if err != nil {
		return fail(err)
	}
	res.Anon, res.File = procField("RssAnon:"), procField("RssFile:")
	runtime.ReadMemStats(&ms)
	res.HeapSys = ms.HeapSys
	runtime.KeepAlive(eng)
	return res
}

// procMem reads VmRSS and VmHWM from /proc/self/status.
func procMem() (rss, hwm uint64, err error) {
	rss, hwm, err = statusMem("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/self/status: %w", err)
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc/self/status")
	}
	return rss, hwm, nil
}

// statusMem reads VmRSS and VmHWM, in bytes, from a /proc/<pid>/status file.
func statusMem(path string) (rss, hwm uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}

// procField reads one kB field of /proc/self/status, in bytes (0 if absent).
func procField(name string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// preloadStore writes n orgs as ingest would (created events, batched),
// and with observed, the ids and conditions the engine records for a Ready
// org (one transaction each, through the engine's own Update).
func preloadStore(path string, n int, observed bool) error {
	st, err := state.Open(path, state.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	facts := make([]state.Fact, 0, 1000)
	for i := 0; i < n; i++ {
		org := fmt.Sprintf("org-%06d", i)
		facts = append(facts, state.Fact{Seq: uint64(i + 1), EventID: events.NewID(), Type: state.FactCreated, OrgID: org,
			Slug: org, Time: now})
		if len(facts) == cap(facts) || i == n-1 {
			if _, err := st.Apply(facts); err != nil {
				return err
			}
			facts = facts[:0]
		}
	}
	if !observed {
		return nil
	}
	for i := 0; i < n; i++ {
		org := fmt.Sprintf("org-%06d", i)
		tid := fmt.Sprintf("%08x-0000-4000-a000-%012x", i, i)
		err := st.Update(org, func(o *state.Org) error {
			host := org + "." + cloudsim.DefaultZoneName
			o.Observed = state.Observed{TunnelID: tid, TunnelName: owner.TunnelName(org), DNSRecordID: fmt.Sprintf("%032x", i),
				DNSName: host, ParameterName: owner.ParamName(owner.DefaultParamPrefix, org), InstanceID: fmt.Sprintf("i-%017x", i),
				InstanceGeneration: 1, IngressHost: host, TunnelStatus: "healthy", ObservedAt: now, LaunchGeneration: 1,
				LaunchAttempt: 1, ParamTunnelID: tid}
			o.Conditions = []state.Condition{
				{Type: state.CondReady, Status: true, Reason: "TunnelHealthy", LastTransitionTime: now},
				{Type: state.CondProvisioning, Status: false, Reason: "Ready", LastTransitionTime: now},
				{Type: state.CondConflict, Status: false, Reason: "NoConflict", LastTransitionTime: now},
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func runScaleChild(ctx context.Context, exe, db, simURL string, touch, stream bool) (childResult, time.Duration, error) {
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"=scale", childDB+"="+db, childSim+"="+simURL)
	if touch {
		cmd.Env = append(cmd.Env, childTouch+"=1")
	}
	if stream {
		cmd.Env = append(cmd.Env, childStream+"=1")
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return childResult{}, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return childResult{}, 0, fmt.Errorf("start %s: %w", exe, err)
	}
	var res childResult
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var line string
	for sc.Scan() {
		line = sc.Text()
	}
	wall := time.Since(start)
	werr := cmd.Wait()
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return res, wall, fmt.Errorf("scale child printed %q (stderr %q, exit %v)", line, stderr.String(), werr)
	}
	if res.Err != "" {
		return res, wall, fmt.Errorf("scale child: %s", res.Err)
	}
	return res, wall, werr
}

func benchScale(ctx context.Context, o Options) ([]Row, error) {
	if o.Exe == "" {
		return nil, errors.New("scale: no child binary (Options.Exe)")
	}
	n := pick(o, 2_000, 100_000, 100_000)
	observed := !o.Quick && !o.Tiny
	replayN := pick(o, 5_000, 200_000, 1_000_000)
	var rows []Row

	dir, err := os.MkdirTemp("", "tunnelward-bench-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// An emulator for the child's clients to point at; startup calls nothing.
	// The emulator the children's clients point at. In full mode it holds
	// the same converged fleet as bbolt (loaded through both Go APIs), so
	// the real reconciler below starts on a consistent world.
	w, err := newWorld(worldOpts{sim: func(c *cloudsim.Config) { c.ConnectDelay = 0 }})
	if err != nil {
		return nil, err
	}
	defer w.close()

	empty, full := filepath.Join(dir, "empty.db"), filepath.Join(dir, "full.db")
	if err := preloadStore(empty, 0, false); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if observed {
		if err := preloadFleet(w, n, true); err != nil {
			return nil, fmt.Errorf("preload %d orgs: %w", n, err)
		}
		if err := w.store.Close(); err != nil {
			return nil, err
		}
		w.store = nil
		full = filepath.Join(w.dir, "state.db")
	} else if err := preloadStore(full, n, false); err != nil {
		return nil, fmt.Errorf("preload %d orgs: %w", n, err)
	}
	loadTook := time.Since(t0)
	fi, err := os.Stat(full)
	if err != nil {
		return nil, err
	}
	base, baseWall, err := runScaleChild(ctx, o.Exe, empty, w.srv.URL, false, false)
	if err != nil {
		return nil, err
	}
	big, bigWall, err := runScaleChild(ctx, o.Exe, full, w.srv.URL, true, false)
	if err != nil {
		return nil, err
	}
	whatIf, _, err := runScaleChild(ctx, o.Exe, full, w.srv.URL, false, true)
	if err != nil {
		return nil, err
	}
	peak := max(big.RSS, big.TouchedRSS, big.HWM)
	records := "records with observed ids and conditions, as the engine leaves Ready orgs"
	if !observed {
		records = "records with desired state only (quick mode: writing observed ids costs one bbolt transaction per org)"
	}
	rows = append(rows, Row{
		Figure:   fmt.Sprintf("6 scale: memory with %s orgs in bbolt", thousands(float64(n))),
		Measured: fmt.Sprintf("peak RSS %s (heap %s)", mb(peak), mb(max(big.HeapInuse, big.HeapTouch))),
		Bound:    fmt.Sprintf("empty store: RSS %s (heap %s)", mb(base.RSS), mb(base.HeapInuse)),
		Goal:     "<= 200 MB RSS",
		Met:      met(peak <= 200<<20),
		Note: fmt.Sprintf("child process = the engine's startup path (state.Open checks every record, provider clients, reconcile.New, EnqueueAll(skipReady) queued %d orgs), RSS from /proc/self/status: peak %s after state.Open (%s), %s after startup (heap %s), %s after one event applied to every org as ingest would (fills the state record cache; heap %s, took %s); peak VmHWM %s (at the end: RssAnon %s, RssFile %s = bbolt's mmap, Go HeapSys %s); what-if: the same selection streamed by hand (state.ForEach; EnqueueAll streams too since it stopped using state.List) peaks at RSS %s; %s; bbolt file %s, preloaded in %s",
			big.Orgs, mb(big.OpenHWM), secs(time.Duration(big.OpenNS)), mb(big.RSS), mb(big.HeapInuse), mb(big.TouchedRSS), mb(big.HeapTouch), secs(time.Duration(big.TouchNS)), mb(big.HWM), mb(big.Anon), mb(big.File), mb(big.HeapSys), mb(max(whatIf.RSS, whatIf.HWM)), records, mb(uint64(fi.Size())), secs(loadTook)),
	})
	rows = append(rows, Row{
		Figure:   fmt.Sprintf("6 scale: startup with %s orgs", thousands(float64(n))),
		Measured: secs(time.Duration(big.StartupNS)),
		Bound:    "empty store " + secs(time.Duration(base.StartupNS)),
		Note: fmt.Sprintf("startup = open bbolt (every record decoded as a corruption check) + clients + engine + every org queued, inside the child; process wall time to its report incl. the touch pass: %s (empty %s)",
			secs(bigWall), secs(baseWall)),
	})

	// The real reconciler process on the same file: external NATS, the
	// (empty) emulator as its cloud.
	if bin, why := reconcilerBinary(ctx, o, dir); bin == "" {
		rows = append(rows, Row{Figure: "6 scale: real reconciler process", Measured: "skipped", Note: why})
	} else {
		row, err := realProcessRow(ctx, o, bin, dir, full, n, w.srv.URL, observed)
		if err != nil {
			return rows, fmt.Errorf("real reconciler process: %w", err)
		}
		rows = append(rows, row)
	}

	rrow, err := benchReplay(ctx, replayN, o)
	if err != nil {
		return rows, fmt.Errorf("replay: %w", err)
	}
	return append(rows, rrow), nil
}

// benchReplay rebuilds a fresh store from n events with ingest.Replay, beside
// a raw ordered read of the same stream.
func benchReplay(ctx context.Context, n int, o Options) (Row, error) {
	e, err := newNATS(ctx)
	if err != nil {
		return Row{}, err
	}
	defer e.close()
	orgs := max(n/10, 1) // one life (ten events) per org
	t0 := time.Now()
	if err := e.publish(ctx, n, orgs, false); err != nil {
		return Row{}, err
	}
	pubTook := time.Since(t0)

	// Bound: read every message of the stream in order, no work.
	stream, err := e.js.Stream(ctx, events.Stream)
	if err != nil {
		return Row{}, err
	}
	t0 = time.Now()
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return Row{}, err
	}
	for got := 0; got < n; {
		b, err := cons.FetchNoWait(1024)
		if err != nil {
			return Row{}, err
		}
		k := 0
		for range b.Messages() {
			k++
		}
		if k == 0 {
			b, err = cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return Row{}, err
			}
			for range b.Messages() {
				k++
			}
			if k == 0 {
				return Row{}, fmt.Errorf("raw read stalled at %d of %d", got, n)
			}
		}
		got += k
	}
	raw := time.Since(t0)

	path := filepath.Join(e.dir, "replayed.db")
	t0 = time.Now()
	res, err := ingest.Replay(ctx, ingest.ReplayConfig{JS: e.js, Validator: e.v, Path: path})
	if err != nil {
		return Row{}, err
	}
	took := time.Since(t0)
	if res.Events != uint64(n) || res.Invalid != 0 || res.Orgs == 0 || res.Orgs > orgs {
		return Row{}, fmt.Errorf("replay read %d events (%d invalid) into %d orgs; want %d events into at most %d orgs", res.Events, res.Invalid, res.Orgs, n, orgs)
	}
	fi, _ := os.Stat(path)
	var size int64
	if fi != nil {
		size = fi.Size()
	}
	shrunk := ""
	if n < 1_000_000 {
		shrunk = fmt.Sprintf(" (SHRUNK: %s of the goal's 1M events in this mode)", thousands(float64(n)))
	}
	return Row{
		Figure:   fmt.Sprintf("6 scale: replay %s events into a fresh store", thousands(float64(n))),
		Measured: fmt.Sprintf("%s (%s ev/s)", secs(took), thousands(float64(n)/took.Seconds())),
		Bound:    fmt.Sprintf("raw ordered read %s", secs(raw)),
		Goal:     "<= 60 s for 1M",
		Met:      met(took <= time.Duration(float64(60*time.Second)*float64(n)/1e6)),
		Note: fmt.Sprintf("ingest.Replay (ordered consumer, decode+validate, batched bbolt tx, atomic swap) of %d events into %d orgs%s; goal scaled linearly when shrunk; publishing them took %s; rebuilt file %s",
			n, res.Orgs, shrunk, secs(pubTook), mb(uint64(size))),
	}, nil
}

// reconcilerBinary is o.Reconciler when given, else it builds
// cmd/reconciler into dir when the module's source is at hand (go run
// ./cmd/bench from the repository), so the real process can be measured;
// "" and a reason when it is not.
func reconcilerBinary(ctx context.Context, o Options, dir string) (string, string) {
	if o.Reconciler != "" {
		return o.Reconciler, ""
	}
	if _, err := os.Stat(filepath.Join("cmd", "reconciler")); err != nil {
		// Tests run in the package directory; the module root is two up.
		if _, err := os.Stat(filepath.Join("..", "..", "cmd", "reconciler")); err != nil {
			return "", "cmd/reconciler not found from the working directory"
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", "no go tool to build cmd/reconciler"
	}
	out := filepath.Join(dir, "reconciler")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/tunnelward/tunnelward/cmd/reconciler")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("go build ./cmd/reconciler: %v: %s", err, strings.TrimSpace(string(b)))
	}
	return out, ""
}

// procRSS reads VmRSS and VmHWM of another process.
func procRSS(pid int) (rss, hwm uint64, err error) {
	return statusMem(fmt.Sprintf("/proc/%d/status", pid))
}

// procRun is what realProcess measured of one reconciler process.
type procRun struct {
	ready, sweepDone           time.Duration
	rssReady, peak, afterReady uint64
}

// realProcess runs the reconciler binary on dataDir (state.db inside) with
// an external NATS server and the emulator at simURL, measures the time to
// /readyz 200, then samples its RSS for window and returns the peak
// (VmHWM included: the open-time walk of the file counts) and, apart, the
// largest RSS sampled after ready (the workers and the first sweep).
//
// Sampling stops early, 2 s after the process's first sweep finished (its
// tunnelward_sweeps_total metric), when that comes before the window ends;
// sweepDone is then the time from start to that sweep's end (0 otherwise).
func realProcess(ctx context.Context, bin, dataDir, natsURL, simURL string, window time.Duration) (m procRun, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return procRun{}, err
	}
	admin := l.Addr().String()
	l.Close()
	// 100,000 orgs in one account and zone is past Cloudflare's limits
	// (the emulator's are raised for the figure): the default pool keeps
	// none, so nothing is counted against them.
	cmd := exec.CommandContext(ctx, bin, "run", "--data-dir", dataDir, "--nats-url", natsURL, "--cloud", simURL,
		"--cloudflare-max-tunnels", "0", "--cloudflare-max-dns-records", "0",
		"--admin-listen", admin, "--log-level", "warn", "--log-format", "json")
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return procRun{}, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	hc := &http.Client{Timeout: time.Second}
	for {
		res, err := hc.Get("http://" + admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(start) > 2*time.Minute {
			return procRun{}, fmt.Errorf("reconciler not ready after 2 minutes; stderr: %s", tail(stderr.String(), 600))
		}
		if cmd.ProcessState != nil {
			return procRun{}, fmt.Errorf("reconciler exited: %s", tail(stderr.String(), 600))
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.ready = time.Since(start)
	if m.rssReady, _, err = procRSS(cmd.Process.Pid); err != nil {
		return procRun{}, err
	}
	end := time.Now().Add(window)
	for i := 0; time.Now().Before(end); i++ {
		r, h, err := procRSS(cmd.Process.Pid)
		if err != nil {
			return procRun{}, fmt.Errorf("reconciler died while measured: %v; stderr: %s", err, tail(stderr.String(), 600))
		}
		m.peak = max(m.peak, r, h)
		m.afterReady = max(m.afterReady, r)
		if m.sweepDone == 0 && i%10 == 0 && sweptOnce(hc, admin) {
			m.sweepDone = time.Since(start)
			if soon := time.Now().Add(2 * time.Second); soon.Before(end) {
				end = soon
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m, nil
}

// sweptOnce reports whether the reconciler at admin finished a sweep.
func sweptOnce(hc *http.Client, admin string) bool {
	res, err := hc.Get("http://" + admin + "/metrics")
	if err != nil {
		return false
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tunnelward_sweeps_total{") {
			continue
		}
		if f := strings.Fields(line); len(f) == 2 && f[1] != "0" {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func realProcessRow(ctx context.Context, o Options, bin, dir, db string, n int, simURL string, observed bool) (Row, error) {
	e, err := newNATS(ctx)
	if err != nil {
		return Row{}, err
	}
	defer e.close()
	dataDir := filepath.Join(dir, "reconciler-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return Row{}, err
	}
	if err := os.Rename(db, filepath.Join(dataDir, "state.db")); err != nil {
		return Row{}, err
	}
	var size int64
	if fi, err := os.Stat(filepath.Join(dataDir, "state.db")); err == nil {
		size = fi.Size()
	}
	// With Ready orgs the window is long enough for the first sweep to
	// list everything (CF pages at the budget's 3.8/s, SSM's 50 per page at
	// its 36/s) and compare every org; sampling stops 2 s after it.
	window := pick(o, 2*time.Second, 10*time.Second, 20*time.Second)
	if observed {
		window = pick(o, 2*time.Second, 120*time.Second, 150*time.Second)
	}
	m, err := realProcess(ctx, bin, dataDir, e.srv.ClientURL(), simURL, window)
	if err != nil {
		return Row{}, err
	}
	what := "desired-only records and an empty emulator: no org is Ready, so every org is queued at start and the workers begin creating at the Cloudflare budget's pace"
	if observed {
		what = fmt.Sprintf("records of Ready orgs and the same orgs converged in the emulator, each with the unhandled health report the row above's touch applied (so every org is queued at start, and the touch's rewrites split the file's leaves: %s now); the first sweep lists %d Cloudflare pages (tunnels %d, DNS records %d per page) at the default budget of 1150 per 5 min, %d EC2 and %d SSM pages",
			mb(uint64(size)), pages(n, cfTunnelPageSize)+pages(n, cfDNSPageSize), cfTunnelPageSize, cfDNSPageSize, pages(n, ec2PageSize), pages(n, ssmPageSize))
	}
	if m.sweepDone > 0 {
		what += fmt.Sprintf("; the first sweep finished %s after start (sampling ended 2 s later)", secs(m.sweepDone))
	} else {
		what += "; the first sweep had not finished when the sampling ended"
	}
	return Row{
		Figure:   fmt.Sprintf("6 scale: real reconciler, %s orgs", thousands(float64(n))),
		Measured: fmt.Sprintf("ready in %s, RSS %s; peak %s (%s after ready)", secs(m.ready), mb(m.rssReady), mb(m.peak), mb(m.afterReady)),
		Bound:    "same file as the row above",
		Note: fmt.Sprintf("the built cmd/reconciler (run --nats-url <embedded server in the bench> --cloud <emulator URL>): process start to /readyz 200, RSS from /proc/<pid>/status then sampled every 100 ms for %s (workers and the first sweep running, Cloudflare limiter at its default); the peak is the largest VmRSS or VmHWM (the open's walk of the file included), after ready the largest VmRSS sampled; %s",
			secs(window), what),
	}, nil
}

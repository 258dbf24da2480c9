package cloudsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Persistence: a world kept in a file outlives the process that serves it,
// as a real cloud outlives its clients. The file is a snapshot of the whole
// world: tunnels (deleted ones too, with secrets and configurations), DNS
// records, instances (with launch times, tags, user-data, metadata
// options), the ClientTokens of every region, parameters of every region
// (values, versions, tags), SSM commands, the simulated cloudflareds
// (running, connected, their connections, the rotation generation of the
// token each holds, Tunnel.SecretGen being the tunnel's) and every pending
// world event (a boot, a termination, a connect attempt) at the time it is
// due. A
// loaded world resumes as if it had kept running while no process served
// it: events that fell due meanwhile fire on the first request, at the
// times they were due. Not kept: call counts (Calls), fault settings and
// rate-limit windows (they come from the Config and /_sim/faults).
//
// Ids never repeat across runs: every open (load or new) seeds the id
// generator afresh from the saved generator state (or Config.Seed) and the
// clock, so even ids handed out after the last save of a run that crashed
// are not handed out again.
//
// Saves are crash-safe: the snapshot is written to <file>.tmp, synced,
// renamed over the file and the directory synced, so the file is always
// either the previous snapshot or the new one, whole. A SHA-256 of the
// world in the file catches any other damage: a file that cannot be loaded
// is an error naming it (SnapshotError), never an empty world.

// Snapshot versions: 1 held one Cloudflare account and zone (its tunnels and
// records were theirs); 2 lists the zones of every identity, each tunnel
// naming its account and each record its zone. Version 1 files still load.
const (
	snapshotFormat  = "tunnelward-cloudsim-world"
	snapshotVersion = 2
)

// SnapshotError is a state file that exists but cannot be loaded: damaged,
// written by a newer version, or holding another account's world.
type SnapshotError struct {
	Path string
	Err  error
}

func (e *SnapshotError) Error() string {
	return fmt.Sprintf("cloud emulator state file %s cannot be loaded: %v; to start from an empty world, delete it (or move it aside)", e.Path, e.Err)
}

func (e *SnapshotError) Unwrap() error { return e.Err }

// snapshotEnvelope is the file: what it is, which version, and the world
// with its checksum. The world is kept as the exact bytes written, so the
// checksum can be checked before anything is decoded.
type snapshotEnvelope struct {
	Format  string          `json:"format"`
	Version int             `json:"version"`
	SHA256  string          `json:"sha256"`
	World   json.RawMessage `json:"world"`
}

// worldSnapshot is the world. Resource types are stored with their Go field
// names; what has unexported state gets a wrapper. AccountID, ZoneID and
// ZoneName are the first Cloudflare identity's; Zones (version 2) every
// identity's zone with its account. Tunnels carry their account
// (Tunnel.AccountTag) and records their zone (DNSRecord.ZoneID); empty ones
// (version 1) are the first identity's.
type worldSnapshot struct {
	SavedAt   time.Time  `json:"saved_at"`
	AccountID string     `json:"account_id"`
	ZoneID    string     `json:"zone_id"`
	ZoneName  string     `json:"zone_name"`
	Zones     []snapZone `json:"zones,omitempty"`
	Regions   []string   `json:"regions"`
	// The id generator: seed and draws since; Seq numbers private IPs.
	IDSeed  int64  `json:"id_seed"`
	IDDraws uint64 `json:"id_draws"`
	Seq     uint64 `json:"seq"`

	Tunnels      []snapTunnel        `json:"tunnels"`
	DNSRecords   []*DNSRecord        `json:"dns_records"`
	Instances    []*Instance         `json:"instances"`
	Reservations map[string][]string `json:"reservations"`
	ClientTokens []snapClientToken   `json:"client_tokens"`
	Parameters   []*Parameter        `json:"parameters"`
	Commands     []*Command          `json:"commands"`
	Connectors   []snapConnector     `json:"connectors"`
	Events       []snapEvent         `json:"events"`
}

// snapZone is one Cloudflare zone the saving emulator served. API tokens
// are not kept: they are the emulator's configuration, not the world's.
type snapZone struct {
	ZoneID    string `json:"zone_id"`
	ZoneName  string `json:"zone_name"`
	AccountID string `json:"account_id"`
}

// snapTunnel adds what TunnelConfig's JSON leaves out (the configuration's
// other keys, returned as sent).
type snapTunnel struct {
	Tunnel
	ConfigRaw map[string]any `json:",omitempty"`
}

// snapClientToken is a ClientToken with its reservation's instances in
// full: they may already have dropped out of the instance list.
type snapClientToken struct {
	Region        string
	Token         string
	Fingerprint   string
	ReservationID string
	CreatedAt     time.Time
	Instances     []*Instance
}

// snapConnector adds the process generation, which pending connect events
// name.
type snapConnector struct {
	Connector
	Gen int
}

type snapEvent struct {
	At time.Time `json:"at"`
	event
}

var knownEvents = map[string]bool{
	evBoot: true, evRebootUp: true, evShutdownDone: true, evStopDone: true, evForget: true, evTokenExpire: true,
	evConnectAttempt: true, evConnectOpen: true, evSSMVisible: true, evSSMRun: true,
}

// Snapshot returns the whole world as the state file holds it. It does not
// advance the world: events that are due stay pending and fire on the next
// request, or after a load. The file holds tunnel secrets and parameter
// values: keep it private (SaveFile writes it 0600).
func (s *Sim) Snapshot() ([]byte, error) {
	b, _, err := s.snapshot()
	return b, err
}

// snapshot is Snapshot and the world's version it holds.
func (s *Sim) snapshot() ([]byte, uint64, error) {
	s.mu.Lock()
	w := worldSnapshot{
		SavedAt: s.cfg.Now().UTC(), AccountID: s.cfg.AccountID, ZoneID: s.cfg.ZoneID, ZoneName: s.cfg.ZoneName,
		Regions: s.Regions(), IDSeed: s.idSeed, IDDraws: s.idDraws, Seq: s.seq,
		Tunnels: []snapTunnel{}, DNSRecords: []*DNSRecord{}, Instances: []*Instance{}, Reservations: s.reservation,
		ClientTokens: []snapClientToken{}, Parameters: s.allParams(), Commands: []*Command{},
		Connectors: []snapConnector{}, Events: make([]snapEvent, 0, len(s.sched)),
	}
	for _, id := range s.cf.order {
		z := s.cf.zones[id]
		w.Zones = append(w.Zones, snapZone{ZoneID: id, ZoneName: z.name, AccountID: z.account})
	}
	for _, id := range sortedKeys(s.tunnels) {
		t := s.tunnels[id]
		st := snapTunnel{Tunnel: *t}
		if t.Config != nil {
			st.ConfigRaw = t.Config.Raw
		}
		w.Tunnels = append(w.Tunnels, st)
	}
	for _, id := range sortedKeys(s.dnsRecords) {
		w.DNSRecords = append(w.DNSRecords, s.dnsRecords[id])
	}
	for _, id := range sortedKeys(s.instances) {
		w.Instances = append(w.Instances, s.instances[id])
	}
	keys := make([]tokenKey, 0, len(s.clientToks))
	for k := range s.clientToks {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tokenKey) int {
		if a.region != b.region {
			return compareStrings(a.region, b.region)
		}
		return compareStrings(a.token, b.token)
	})
	for _, k := range keys {
		ct := s.clientToks[k]
		w.ClientTokens = append(w.ClientTokens, snapClientToken{Region: k.region, Token: k.token, Fingerprint: ct.Fingerprint,
			ReservationID: ct.ReservationID, CreatedAt: ct.CreatedAt, Instances: ct.Instances})
	}
	for _, id := range sortedKeys(s.commands) {
		w.Commands = append(w.Commands, s.commands[id])
	}
	for _, id := range sortedKeys(s.connectors) {
		c := s.connectors[id]
		w.Connectors = append(w.Connectors, snapConnector{Connector: *c, Gen: c.gen})
	}
	for _, e := range s.sched {
		w.Events = append(w.Events, snapEvent{At: e.at, event: e.ev})
	}
	// Encoded under mu: the world's maps are shared with the handlers.
	world, err := json.Marshal(w)
	version := s.version
	s.mu.Unlock()
	if err != nil {
		return nil, 0, fmt.Errorf("encode the world: %w", err)
	}
	sum := sha256.Sum256(world)
	// Written by hand so that the world's bytes are exactly the ones summed
	// (json.Marshal would re-encode a RawMessage).
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "{\"format\":%q,\"version\":%d,\"sha256\":%q,\"world\":", snapshotFormat, snapshotVersion, hex.EncodeToString(sum[:]))
	buf.Write(world)
	buf.WriteString("}\n")
	return buf.Bytes(), version, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Restore builds the world a Snapshot holds, for cfg: the snapshot's first
// Cloudflare identity (account and zone) must be cfg's, every tunnel's
// account and every record's zone must be one cfg serves (a zone under the
// same name, in the same account), and the snapshot's regions join
// cfg.Regions (an account keeps its regions). A version 1 snapshot's
// tunnels and records are the first identity's.
// The id generator is seeded afresh (see the package's persistence notes).
// An error says what is wrong with the snapshot; OpenFile wraps it in a
// SnapshotError naming the file.
func Restore(cfg Config, data []byte) (*Sim, error) {
	var env snapshotEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, errors.New("the file is empty")
		}
		return nil, fmt.Errorf("not a snapshot (damaged or truncated?): %w", err)
	}
	if env.Format != snapshotFormat {
		return nil, fmt.Errorf("not a cloud emulator snapshot (format %q, want %q)", env.Format, snapshotFormat)
	}
	if env.Version < 1 || env.Version > snapshotVersion {
		return nil, fmt.Errorf("snapshot version %d; this emulator reads versions 1 to %d (written by another version of tunnelward?)", env.Version, snapshotVersion)
	}
	sum := sha256.Sum256(env.World)
	if hex.EncodeToString(sum[:]) != env.SHA256 {
		return nil, errors.New("checksum mismatch: the file was damaged or edited")
	}
	var w worldSnapshot
	dec := json.NewDecoder(bytes.NewReader(env.World))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("decode the world: %w", err)
	}
	if w.AccountID != cfg.AccountID || w.ZoneID != cfg.ZoneID || w.ZoneName != cfg.ZoneName {
		return nil, fmt.Errorf("it holds the world of Cloudflare account %s, zone %s (%s), not of account %s, zone %s (%s) this emulator serves; "+
			"start it with the same account and zone",
			w.AccountID, w.ZoneID, w.ZoneName, cfg.AccountID, cfg.ZoneID, cfg.ZoneName)
	}
	normaliseRegions(&cfg)
	for _, r := range w.Regions {
		if !reRegion.MatchString(r) {
			return nil, fmt.Errorf("region %q is not an AWS region name", r)
		}
		if !slices.Contains(cfg.Regions, r) {
			cfg.Regions = append(cfg.Regions, r) // normaliseRegions made the slice cfg's own
		}
	}
	s := New(cfg)
	if err := s.checkSnapshotZones(&w); err != nil {
		return nil, err
	}
	if err := s.restore(&w); err != nil {
		return nil, err
	}
	s.reseedIDs(w.IDSeed, w.IDDraws)
	return s, nil
}

// checkSnapshotZones refuses a world whose Cloudflare zones this emulator
// serves differently: a zone the snapshot names that s serves under
// another name or in another account. (Resources of an account or zone s
// does not serve at all are refused by restore.)
func (s *Sim) checkSnapshotZones(w *worldSnapshot) error {
	for _, z := range w.Zones {
		cur, ok := s.cf.zones[z.ZoneID]
		if ok && (cur.name != normZone(z.ZoneName) || cur.account != z.AccountID) {
			return fmt.Errorf("it holds zone %s as %s in account %s; this emulator serves it as %s in account %s; start it with the same identities",
				z.ZoneID, z.ZoneName, z.AccountID, cur.name, cur.account)
		}
	}
	return nil
}

// restore fills the empty world s from w, checking what would break it.
func (s *Sim) restore(w *worldSnapshot) error {
	s.seq = w.Seq
	for i := range w.Tunnels {
		t := w.Tunnels[i].Tunnel
		if t.ID == "" || s.tunnels[t.ID] != nil {
			return fmt.Errorf("tunnel %d: id %q missing or repeated", i, t.ID)
		}
		t.AccountTag = s.accountOrFirst(t.AccountTag) // version 1: the first identity's
		if !s.cf.accounts[t.AccountTag] && t.AccountTag != s.cf.first.AccountID {
			return fmt.Errorf("it holds tunnel %s (%s) of Cloudflare account %s, which this emulator does not serve; start it with that account among its identities",
				t.ID, t.Name, t.AccountTag)
		}
		if t.Config != nil {
			t.Config.Raw = w.Tunnels[i].ConfigRaw
		}
		if t.Metadata == nil {
			t.Metadata = map[string]any{}
		}
		s.tunnels[t.ID] = &t
	}
	for i, r := range w.DNSRecords {
		if r == nil || r.ID == "" || s.dnsRecords[r.ID] != nil {
			return fmt.Errorf("DNS record %d: missing, or id missing or repeated", i)
		}
		r.ZoneID = s.zoneOrFirst(r.ZoneID) // version 1: the first identity's
		if _, ok := s.cf.zones[r.ZoneID]; !ok && r.ZoneID != s.cf.first.ZoneID {
			return fmt.Errorf("it holds DNS record %s (%s) of Cloudflare zone %s, which this emulator does not serve; start it with that zone among its identities",
				r.ID, r.Name, r.ZoneID)
		}
		s.dnsRecords[r.ID] = r
	}
	for i, in := range w.Instances {
		if in == nil || in.ID == "" || s.instances[in.ID] != nil {
			return fmt.Errorf("instance %d: missing, or id missing or repeated", i)
		}
		if in.Region != "" && !s.hasRegion(in.Region) {
			return fmt.Errorf("instance %s: region %q is not one of the snapshot's regions", in.ID, in.Region)
		}
		if in.Tags == nil {
			in.Tags = map[string]string{}
		}
		s.instances[in.ID] = in
	}
	for id, ids := range w.Reservations {
		s.reservation[id] = ids
	}
	for i, ct := range w.ClientTokens {
		if ct.Token == "" || !s.hasRegion(ct.Region) {
			return fmt.Errorf("client token %d: token missing or region %q unknown", i, ct.Region)
		}
		insts := make([]*Instance, len(ct.Instances))
		for j, in := range ct.Instances {
			if in == nil {
				return fmt.Errorf("client token %d: instance %d missing", i, j)
			}
			// Share the listed instance, as before the save: expireToken
			// tells a listed instance from a dropped one by identity.
			if cur := s.instances[in.ID]; cur != nil {
				in = cur
			}
			insts[j] = in
		}
		s.clientToks[tokenKey{ct.Region, ct.Token}] = &clientToken{Fingerprint: ct.Fingerprint, ReservationID: ct.ReservationID,
			CreatedAt: ct.CreatedAt, Instances: insts}
	}
	for i, p := range w.Parameters {
		if p == nil || p.Name == "" || !s.hasRegion(p.Region) {
			return fmt.Errorf("parameter %d: missing, or name missing, or region unknown", i)
		}
		if s.params[paramKey{p.Region, p.Name}] != nil {
			return fmt.Errorf("parameter %s in %s: repeated", p.Name, p.Region)
		}
		if p.Tags == nil {
			p.Tags = map[string]string{}
		}
		s.setParam(p)
	}
	for i, c := range w.Commands {
		if c == nil || c.ID == "" || s.commands[c.ID] != nil {
			return fmt.Errorf("command %d: missing, or id missing or repeated", i)
		}
		if c.Invocations == nil {
			c.Invocations = map[string]*Invocation{}
		}
		s.commands[c.ID] = c
	}
	for i := range w.Connectors {
		c := w.Connectors[i].Connector
		if c.InstanceID == "" || s.connectors[c.InstanceID] != nil {
			return fmt.Errorf("connector %d: instance id %q missing or repeated", i, c.InstanceID)
		}
		c.gen = w.Connectors[i].Gen
		s.connectors[c.InstanceID] = &c
	}
	for i, e := range w.Events {
		if !knownEvents[e.Kind] {
			return fmt.Errorf("event %d: unknown kind %q", i, e.Kind)
		}
		if i > 0 && e.At.Before(w.Events[i-1].At) {
			return fmt.Errorf("event %d: out of time order", i)
		}
		s.sched = append(s.sched, scheduled{at: e.At, ev: e.event})
	}
	return nil
}

// reseedIDs starts a new id stream, derived from the last one's seed and
// draws and from the clock: a run that crashed after handing out ids it had
// not saved, then a run loaded from the same snapshot, still draw different
// ids. Caller owns s (not yet shared).
func (s *Sim) reseedIDs(seed int64, draws uint64) {
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(seed))
	binary.BigEndian.PutUint64(b[8:], draws)
	binary.BigEndian.PutUint64(b[16:], uint64(s.cfg.Now().UnixNano()))
	h := sha256.Sum256(b[:])
	s.idSeed = int64(binary.BigEndian.Uint64(h[:8]))
	s.idDraws = 0
	s.rnd = rand.New(rand.NewSource(s.idSeed))
}

// OpenFile returns the world kept in path: the one saved there, or a new
// empty world for cfg when there is no such file (loaded false). A file
// that exists but cannot be loaded is a *SnapshotError; nothing starts
// empty in its place. Either way the id generator is seeded afresh, so the
// world's ids repeat none of an earlier run's, nor of a world deleted to
// start from empty. Keep one process per file.
func OpenFile(cfg Config, path string) (s *Sim, loaded bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		s := New(cfg)
		s.reseedIDs(s.cfg.Seed, 0)
		return s, false, nil
	}
	if err != nil {
		return nil, false, &SnapshotError{Path: path, Err: err}
	}
	s, err = Restore(cfg, data)
	if err != nil {
		return nil, false, &SnapshotError{Path: path, Err: err}
	}
	return s, true, nil
}

// Counts says how much a world holds, for a log line.
func (s *Sim) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]int{"tunnels": len(s.tunnels), "dns_records": len(s.dnsRecords), "instances": len(s.instances),
		"parameters": len(s.params), "commands": len(s.commands)}
}

// saveMu serialises saves: they share the one temporary file per path.
var saveMu sync.Mutex

// SaveFile writes the world to path, crash-safely (see the package's
// persistence notes), readable by the owner only.
func (s *Sim) SaveFile(path string) error {
	_, err := s.saveFile(path)
	return err
}

// saveFile is SaveFile, returning the version of the world it wrote.
func (s *Sim) saveFile(path string) (uint64, error) {
	saveMu.Lock()
	defer saveMu.Unlock()
	b, version, err := s.snapshot()
	if err != nil {
		return 0, fmt.Errorf("save the world to %s: %w", path, err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return 0, fmt.Errorf("save the world to %s: %w", path, err)
	}
	return version, nil
}

// beforeRename, when set (tests), runs between writing and syncing the
// temporary file and renaming it over the snapshot: an error there is a
// crash at the worst moment.
var beforeRename func(tmp string) error

// writeFileAtomic replaces path with data so that a crash at any point
// leaves either the old file or the new one, whole: write a temporary file
// beside it, fsync, rename over, fsync the directory (which makes the
// rename itself durable).
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if beforeRename != nil {
		if err := beforeRename(tmp); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s over %s: %w", tmp, path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("open directory of %s to sync it: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory of %s: %w", path, err)
	}
	return nil
}

// Autosave keeps a world in its file while it runs: a save follows every
// change within the coalescing window (changes during the window share the
// save), and Close writes a last one.
type Autosave struct {
	s       *Sim
	path    string
	window  time.Duration
	onError func(error)
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	err     error
}

// DefaultSaveWindow is how long an autosave waits after a change before it
// writes: a burst of requests (an org's whole build) costs one write, and a
// crash loses at most this much.
const DefaultSaveWindow = 250 * time.Millisecond

// StartAutosave saves s to path after changes, at most once per window
// (DefaultSaveWindow when 0). A failed save is passed to onError (may be
// nil) and tried again after the next window. Stop it with Close.
func (s *Sim) StartAutosave(path string, window time.Duration, onError func(error)) *Autosave {
	if window <= 0 {
		window = DefaultSaveWindow
	}
	if onError == nil {
		onError = func(error) {}
	}
	a := &Autosave{s: s, path: path, window: window, onError: onError, stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *Autosave) run() {
	defer close(a.done)
	// Unknown at first: a change made before the start is still pending on
	// notify, and is saved like any other.
	saved := ^uint64(0)
	retry := (<-chan time.Time)(nil)
	for {
		select {
		case <-a.stop:
			return
		case <-a.s.notify:
		case <-retry:
		}
		retry = nil
		select {
		case <-a.stop:
			return
		case <-time.After(a.window):
		}
		a.s.mu.Lock()
		current := a.s.version
		a.s.mu.Unlock()
		if current == saved {
			continue
		}
		v, err := a.s.saveFile(a.path)
		if err != nil {
			a.onError(err)
			retry = time.After(a.window)
			continue
		}
		saved = v
	}
}

// Close stops the autosave and writes the world a last time; it returns
// that save's error. The caller stops serving first, so the last save holds
// every change.
func (a *Autosave) Close() error {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		_, a.err = a.s.saveFile(a.path)
	})
	return a.err
}

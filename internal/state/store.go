package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tunnelward/tunnelward/internal/crashpoint"
)

// SchemaVersion is the layout version this build writes. Bump it and add a
// step to migrations when the layout changes.
const SchemaVersion = 1

var (
	bucketMeta = []byte("meta")
	bucketOrgs = []byte("orgs")
	keyVersion = []byte("schema_version")
)

// migrations[v] upgrades a file at version v to v+1, inside one transaction.
// Version 0 is an empty (new) file.
var migrations = map[int]func(tx *bolt.Tx) error{
	0: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketOrgs)
		return err
	},
}

// Errors callers can test for with errors.Is.
var (
	ErrNotFound      = errors.New("org not found")
	ErrLocked        = errors.New("state file is locked by another process")
	ErrCorrupt       = errors.New("state file is corrupt")
	ErrFutureVersion = errors.New("state file was written by a newer tunnelward")
)

// Options tune Open.
type Options struct {
	// Timeout waits this long for the file lock (default 1 s).
	Timeout time.Duration
	// ReadOnly opens the file for reading (status commands).
	ReadOnly bool
	// MaxHealthReports caps the reports kept per org (default 20).
	MaxHealthReports int
	// CacheRecords bounds the decoded records kept for writers (default
	// DefaultCacheRecords; negative: none).
	CacheRecords int
	// SyncFreelist writes bbolt's freelist at every commit. Off (the
	// default), commits are cheaper (ingest) but bbolt rebuilds the
	// freelist at open by walking every page of the file.
	SyncFreelist bool
	// Now stamps Org.ChangedAt (default time.Now); tests fix it.
	Now func() time.Time
}

// Store is the bbolt file holding every org's record.
type Store struct {
	db    *bolt.DB
	path  string
	opts  Options
	cache orgCache
	// wmu spans a write transaction and the cache publish after it: without
	// it a second writer could read the cache between the first one's
	// commit and publish, and write a stale record back (lost update).
	// bbolt serializes writers anyway, so holding it costs no concurrency.
	wmu sync.Mutex
	// lastDrop is when the map's resident pages were last dropped
	// (afterCommit), in Unix ns.
	lastDrop atomic.Int64
}

// Open opens or creates the state file at path and migrates it to
// SchemaVersion. It never panics: a corrupt file, a held lock and a file from
// a newer version are errors naming the file and what to do.
func Open(path string, opts Options) (s *Store, err error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.MaxHealthReports <= 0 {
		opts.MaxHealthReports = 20
	}
	if opts.CacheRecords == 0 {
		opts.CacheRecords = DefaultCacheRecords
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// bbolt panics on some kinds of corruption while reading pages, and a
	// truncated file faults (SIGBUS) when its mmap is read past the end;
	// turn both into errors for this goroutine while the file is checked.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, corruptErr(path, fmt.Errorf("%v", r))
		}
	}()
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open state file %s: %w", path, err)
		}
	}
	if err := checkFileSize(path); err != nil {
		return nil, err
	}
	if err := scanFile(path, opts.Timeout); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly, NoFreelistSync: !opts.SyncFreelist, FreelistType: bolt.FreelistMapType})
	if err != nil {
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("open state file %s: %w (waited %s; is a reconciler or replay already running on this data dir? stop it or use another --data-dir): %v",
				path, ErrLocked, opts.Timeout, err)
		case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
			errors.Is(err, bolterrors.ErrVersionMismatch), isFormatErr(err):
			return nil, corruptErr(path, err)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	s = &Store{db: db, path: path, opts: opts}
	s.cache.max = opts.CacheRecords
	if err := s.migrate(); err != nil {
		_ = db.Close()
		return nil, err
	}
	// The checks above read every page; nothing needs them resident now.
	_ = s.db.View(func(tx *bolt.Tx) error { dropResident(tx); return nil })
	return s, nil
}

func isFormatErr(err error) bool {
	// bbolt reports short or garbled files with plain errors.
	var m string
	if err != nil {
		m = err.Error()
	}
	for _, s := range []string{"file size too small", "invalid database", "page", "mmap"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func corruptErr(path string, cause error) error {
	return fmt.Errorf("open state file %s: %w (%v); the stream holds every event: move the file aside and run `reconciler replay` to rebuild it",
		path, ErrCorrupt, cause)
}

func (s *Store) migrate() (err error) {
	version := 0
	check := func(tx *bolt.Tx) error {
		// A truncated file may still open; its pages past the end would
		// fault later. The meta page knows how big the file must be.
		if fi, err := os.Stat(s.path); err == nil && tx.Size() > fi.Size() {
			return corruptErr(s.path, fmt.Errorf("file is %d bytes but its pages need %d: truncated", fi.Size(), tx.Size()))
		}
		if m := tx.Bucket(bucketMeta); m != nil {
			if v := m.Get(keyVersion); v != nil {
				if len(v) != 8 {
					return corruptErr(s.path, fmt.Errorf("schema version is %d bytes", len(v)))
				}
				version = int(binary.BigEndian.Uint64(v))
			}
		}
		if version > SchemaVersion {
			return fmt.Errorf("open state file %s: %w (file schema version %d, this build knows %d): upgrade tunnelward, or rebuild the file for this version with `reconciler replay`",
				s.path, ErrFutureVersion, version, SchemaVersion)
		}
		// Check every org record decodes so corruption shows at start, not mid-run.
		if b := tx.Bucket(bucketOrgs); b != nil {
			return b.ForEach(func(k, v []byte) error {
				var o Org
				if err := json.Unmarshal(v, &o); err != nil {
					return corruptErr(s.path, fmt.Errorf("org %q: %w", k, err))
				}
				return nil
			})
		}
		return nil
	}
	if err := s.db.View(check); err != nil {
		return err
	}
	if version == SchemaVersion || s.opts.ReadOnly {
		if s.opts.ReadOnly && version < SchemaVersion {
			return fmt.Errorf("open state file %s read-only: schema version %d needs migrating to %d: start the reconciler once", s.path, version, SchemaVersion)
		}
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for v := version; v < SchemaVersion; v++ {
			step, ok := migrations[v]
			if !ok {
				return fmt.Errorf("state file %s: no migration from schema version %d", s.path, v)
			}
			if err := step(tx); err != nil {
				return fmt.Errorf("state file %s: migrate schema %d -> %d: %w", s.path, v, v+1, err)
			}
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], SchemaVersion)
		return m.Put(keyVersion, b[:])
	})
}

// now is the time written records are stamped with (ChangedAt). UTC drops
// the monotonic reading, so a cached record equals its decoded copy.
func (s *Store) now() time.Time { return s.opts.Now().UTC() }

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state file %s: %w", s.path, err)
	}
	return nil
}

// Ping reads the file, for readiness checks.
func (s *Store) Ping() error {
	return s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketOrgs) == nil {
			return fmt.Errorf("state file %s: orgs bucket missing", s.path)
		}
		return nil
	})
}

func getOrg(b *bolt.Bucket, id string) (Org, bool, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return Org{}, false, nil
	}
	var o Org
	if err := json.Unmarshal(v, &o); err != nil {
		return Org{}, false, fmt.Errorf("decode org %s: %w", id, err)
	}
	return o, true, nil
}

func putOrg(b *bolt.Bucket, o Org) error {
	v, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode org %s: %w", o.ID, err)
	}
	if err := b.Put([]byte(o.ID), v); err != nil {
		return fmt.Errorf("write org %s: %w", o.ID, err)
	}
	return nil
}

// Get returns one org's record.
func (s *Store) Get(orgID string) (Org, bool, error) {
	var (
		o  Org
		ok bool
	)
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		o, ok, err = getOrg(tx.Bucket(bucketOrgs), orgID)
		return err
	})
	return o, ok, err
}

// ForEach calls fn for every org in id order, inside one read transaction;
// fn must not call back into the store's write methods. The pass drops the
// pages it read from residency as it goes (dropResident, every few MB of
// records, and at the end): the sweep streams every org every few minutes,
// and would otherwise bring the whole file into RSS each time.
func (s *Store) ForEach(fn func(Org) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		defer dropResident(tx)
		read := 0
		return tx.Bucket(bucketOrgs).ForEach(func(k, v []byte) error {
			if read += len(v); read >= dropAfterBytes {
				dropResident(tx) // the record being read is faulted in again
				read = 0
			}
			var o Org
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("decode org %s: %w", k, err)
			}
			return fn(o)
		})
	})
}

// List returns every org, sorted by id.
func (s *Store) List() ([]Org, error) {
	var out []Org
	err := s.ForEach(func(o Org) error { out = append(out, o); return nil })
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID }) // bbolt keys are sorted already; keep the promise explicit
	return out, err
}

// Update runs fn on one org's record in one transaction, for the reconcile
// engine. Desired state and the event bookkeeping (Desired, LastSeq,
// LastEventID, UpdatedAt, the health reports other than their Handled flag)
// are restored after fn, so the engine can never corrupt what the events
// said. ChangedAt is stamped when the record differs from before (fn cannot
// set it). An unknown org is an error wrapping ErrNotFound; an error from fn
// writes nothing.
func (s *Store) Update(orgID string, fn func(*Org) error) error {
	crashpoint.Hit("state.update.before")
	defer crashpoint.Hit("state.update.after")
	var t *txOrgs
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		t = s.txOrgs(tx)
		o, ok, err := t.get(orgID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("update org %s: %w", orgID, ErrNotFound)
		}
		orig := o.clone()
		if err := fn(&o); err != nil {
			return fmt.Errorf("update org %s: %w", orgID, err)
		}
		handled := map[string]bool{}
		for _, r := range o.HealthReports {
			if r.Handled {
				handled[r.EventID] = true
			}
		}
		o.ID, o.Desired, o.LastSeq, o.LastEventID, o.UpdatedAt = orig.ID, orig.Desired, orig.LastSeq, orig.LastEventID, orig.UpdatedAt
		o.DesiredSeq, o.GenerationSeq = orig.DesiredSeq, orig.GenerationSeq
		o.HealthReports = slices.Clone(orig.HealthReports) // own copy: orig must stay as it was, for the comparison below
		for i := range o.HealthReports {
			if handled[o.HealthReports[i].EventID] {
				o.HealthReports[i].Handled = true
			}
		}
		// A pass that rewrites the same values (a retried step) is not a
		// change, so it does not move ChangedAt.
		o.ChangedAt = orig.ChangedAt
		if !reflect.DeepEqual(o, orig) {
			o.ChangedAt = s.now()
		}
		if err := t.put(o); err != nil {
			return err
		}
		return t.flush()
	})
	if err == nil {
		t.committed()
	}
	return err
}

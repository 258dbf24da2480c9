package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// checkFileSize reads bbolt's two meta pages itself, before bbolt maps the
// file, and refuses a file shorter than its newest valid meta page says.
// bbolt.Open would otherwise fault (SIGBUS) on the missing pages; with
// NoFreelistSync it reads every page in a goroutine of its own, where no
// recover or SetPanicOnFault of ours can catch the fault, and the process
// dies. A file with no valid meta page is left to bbolt, which reports it
// as invalid. An empty or missing file is a new store.
func checkFileSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // missing: bbolt creates it; unreadable: bbolt says why
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	const (
		pageHeader = 16         // id, flags, count, overflow
		magic      = 0xED0CDAED // bbolt's
		sumOffset  = 56         // meta fields before the checksum
	)
	buf := make([]byte, pageHeader+sumOffset+8)
	var best struct {
		ok         bool
		txid, need uint64
	}
	check := func(off int64) (pageSize uint32) {
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return 0
		}
		m := buf[pageHeader:]
		le := binary.LittleEndian
		h := fnv.New64a()
		_, _ = h.Write(m[:sumOffset])
		if le.Uint32(m[0:]) != magic || le.Uint64(m[sumOffset:]) != h.Sum64() {
			return 0
		}
		pageSize = le.Uint32(m[8:])
		hwm, txid := le.Uint64(m[40:]), le.Uint64(m[48:])
		if !best.ok || txid > best.txid {
			best.ok, best.txid, best.need = true, txid, hwm*uint64(pageSize)
		}
		return pageSize
	}
	ps := check(0)
	if ps == 0 {
		ps = uint32(os.Getpagesize()) // the first meta is damaged: bbolt's default page size
	}
	check(int64(ps))
	if best.ok && uint64(fi.Size()) < best.need {
		return corruptErr(path, fmt.Errorf("file is %d bytes but its pages need %d: truncated", fi.Size(), best.need))
	}
	return nil
}

// scanFile reads every page of an existing file once, read-only, in the
// caller's goroutine, before the real open. A damaged page then faults or
// panics here, where Open turns it into a corrupt-file error; bbolt.Open
// with NoFreelistSync would otherwise walk the pages in a goroutine of its
// own and a bad page pointer would kill the process (SIGSEGV). A held lock
// is reported as ErrLocked; other open errors are left to the real open.
func scanFile(path string, timeout time.Duration) error {
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("open state file %s: %w (waited %s; is a reconciler or replay already running on this data dir? stop it or use another --data-dir): %v",
				path, ErrLocked, timeout, err)
		}
		return nil
	}
	defer db.Close()
	var sink byte
	var walk func(b *bolt.Bucket) error
	walk = func(b *bolt.Bucket) error {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					if err := walk(nb); err != nil {
						return err
					}
				}
				continue
			}
			for i := 0; i < len(v); i += 1024 { // touches every page of an overflowing value
				sink ^= v[i]
			}
		}
		return nil
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) })
	})
	_ = sink
	if err != nil {
		return corruptErr(path, err)
	}
	return nil
}

//go:build linux

package state

import (
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dropResident tells the kernel the process no longer needs the pages of
// bbolt's memory map resident (madvise MADV_DONTNEED). The map is a
// read-only shared map of the file, so nothing is lost: the pages stay in
// the page cache (reclaimable, not the process's RSS) and the next read of
// one faults it back in. Whole-file passes (the open-time checks, every
// sweep's ForEach) otherwise leave the whole file resident: 160 MB at
// 100,000 orgs. It must run inside a transaction: an open transaction holds
// bbolt's mmap lock, so the map cannot be moved or unmapped meanwhile and
// the range is still bbolt's. Best effort: an error changes nothing.
func dropResident(tx *bolt.Tx) {
	info := tx.DB().Info()
	size := tx.Size() // high-water mark of the file's pages, within the map
	if info == nil || info.Data == 0 || size <= 0 {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, info.Data, uintptr(size), syscall.MADV_DONTNEED)
}

// dropAfterBytes is how much a ForEach pass reads between drops.
var dropAfterBytes = 8 << 20 // a variable for tests

// dropEvery spaces the drops after commits: writes read the pages they
// change through the map, so without drops a reconciler that writes every
// org over time (ingest, the engine) ends with the whole file resident.
// One drop costs a walk of the map's page tables (well under a
// millisecond for a 200 MB file), so ten a second cost nothing that shows.
const dropEvery = 100 * time.Millisecond

// afterCommit drops the resident pages when dropEvery has passed since the
// last drop.
func (s *Store) afterCommit() {
	now := time.Now().UnixNano()
	last := s.lastDrop.Load()
	if now-last < int64(dropEvery) || !s.lastDrop.CompareAndSwap(last, now) {
		return
	}
	_ = s.db.View(func(tx *bolt.Tx) error { dropResident(tx); return nil })
}

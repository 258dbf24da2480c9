package state

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
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

//go:build !linux

package state

import bolt "go.etcd.io/bbolt"

// dropResident is Linux-only (madvise); elsewhere the pages stay resident.
func dropResident(*bolt.Tx) {}

func (s *Store) afterCommit() {}

var dropAfterBytes = 8 << 20 // a variable for tests

//go:build !linux

package state

import bolt "go.etcd.io/bbolt"

// dropResident is Linux-only (madvise); elsewhere the pages stay resident.
func dropResident(*bolt.Tx) {}

func (s *Store) afterCommit() {}

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/state"
)

// startError lists every problem start-up found with the host before it
// started anything.
type startError struct{ problems []error }

func (e *startError) Error() string {
	texts := make([]string, len(e.problems))
	for i, p := range e.problems {
		texts[i] = p.Error()
	}
	if len(texts) == 1 {
		return "cannot start: " + texts[0]
	}
	return fmt.Sprintf("cannot start (%d problems): %s", len(texts), strings.Join(texts, "; "))
}

func (e *startError) Unwrap() []error { return e.problems }

// preflight checks what the daemon needs of this host before anything
// touches NATS (so no stream is created by a start that then fails): the
// data dir and state file, the sandbox's cloud (sandbox mode), and every
// local listen address (admin, sandbox emulator, embedded NATS). It reports all problems at once, not the first
// one per restart. The state file stays open and the admin and sandbox
// listeners stay bound, handed to their servers, so nothing can take them
// in between; the embedded NATS server binds its port itself.
func (a *app) preflight() error {
	c := a.cfg
	var probs []error
	if err := checkDataDir(c.DataDir, c.NATS.Embedded()); err != nil {
		probs = append(probs, err)
	} else if store, err := state.Open(statePath(c), state.Options{Timeout: 2 * time.Second}); err != nil {
		if errors.Is(err, os.ErrPermission) {
			err = dataDirError(c.DataDir, fmt.Errorf("cannot open the state file: %w", err), "chown -R")
		}
		probs = append(probs, err)
	} else {
		a.store = store
		a.closers = append(a.closers, func() {
			if err := store.Close(); err != nil {
				a.log.Error("close state", "err", err)
			}
		})
		// Only with the state file held: the sandbox's file beside it
		// belongs to the reconciler that holds the data dir.
		if c.Cloud == config.ModeSandbox {
			if err := a.openSandbox(); err != nil {
				probs = append(probs, err)
			}
		}
	}

	hold := func(flag, addr string) net.Listener {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			probs = append(probs, listenError(flag, addr, err))
			return nil
		}
		a.closers = append(a.closers, func() { _ = l.Close() }) // harmless once its server closed it
		return l
	}
	a.adminLn = hold("admin-listen", c.AdminListen)
	if c.Cloud == config.ModeSandbox {
		a.sandboxLn = hold("sandbox-listen", c.SandboxListen)
	}
	if c.NATS.Embedded() {
		if l := hold("nats-listen", c.NATS.Listen); l != nil {
			_ = l.Close() // free again for the embedded server
		}
	}
	if len(probs) > 0 {
		return &startError{problems: probs}
	}
	return nil
}

// checkDataDir creates the data dir if needed and proves it writable (and
// the embedded server's store in it), by creating and removing a file.
func checkDataDir(dir string, embeddedNATS bool) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return dataDirError(dir, fmt.Errorf("cannot create it: %w", err), "install -d -o")
	}
	dirs := []string{dir}
	if st, err := os.Stat(filepath.Join(dir, "nats")); embeddedNATS && err == nil && st.IsDir() {
		dirs = append(dirs, filepath.Join(dir, "nats"))
	}
	for _, d := range dirs {
		f, err := os.CreateTemp(d, ".tunnelward-write-check-*")
		if err != nil {
			return dataDirError(dir, fmt.Errorf("cannot write in %s: %w", d, err), "chown -R")
		}
		name := f.Name()
		f.Close()
		if err := os.Remove(name); err != nil {
			return dataDirError(dir, fmt.Errorf("cannot remove a file in %s: %w", d, err), "chown -R")
		}
	}
	return nil
}

// dataDirError names the data dir, the flag and a fix: make the directory
// this user's (fixCmd: "install -d -o" to create it, "chown -R" to take
// it over), or choose another one.
func dataDirError(dir string, err error, fixCmd string) error {
	shown := dir
	if abs, aerr := filepath.Abs(dir); aerr == nil && abs != filepath.Clean(dir) {
		shown += " (" + abs + ")"
	}
	uid := os.Getuid()
	return fmt.Errorf("--data-dir %s: %w; fix: make it writable for the user the reconciler runs as (uid %d), e.g. `sudo %s %d %s`, or choose a writable directory with --data-dir DIR",
		shown, err, uid, fixCmd, uid, dir)
}

// listenError names the address, the flag and what to do.
func listenError(flag, addr string, err error) error {
	fix := "choose another with --" + flag + " HOST:PORT"
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		// err says no more than this ("bind: address already in use").
		return fmt.Errorf("--%s %s: address already in use (another reconciler, or another program, listens there): stop it, or %s", flag, addr, fix)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		fix = "the host is not an address of this machine: " + fix
	case errors.Is(err, syscall.EACCES):
		fix = "ports below 1024 need privileges: " + fix
	}
	return fmt.Errorf("--%s %s: cannot listen: %w; %s", flag, addr, err, fix)
}

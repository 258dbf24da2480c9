// Package testbin builds the commands tests run as processes (this
// module's, or a dependency's such as nats-server), once for every test
// package and every run: into a directory of the user's cache, one per
// checkout, where `go build` relinks only when the sources changed (it
// compares the build ID of the binary already there, as `go install`
// does). A lock file serialises the builds of one binary across the test
// processes `go test ./...` runs at once. Only tests import it.
package testbin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

var (
	mu    sync.Mutex
	built = map[string]error{} // name -> result, in this process
)

// Root is the module's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Dir is where the binaries of this checkout are kept.
func Dir() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root, err := filepath.Abs(Root())
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(cache, "tunnelward-testbin", hex.EncodeToString(sum[:6])), nil
}

// Path builds pkg (a main package path, or one relative to the module
// root such as ./cmd/reconciler) as name and returns the binary's path.
// The cache may lie in a home directory other users cannot enter: a test
// that runs the binary as another user copies it first.
func Path(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := Build(name, pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Build is Path without a test.
func Build(name, pkg string) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	mu.Lock()
	defer mu.Unlock()
	if err, done := built[name]; done {
		return out, err
	}
	err = build(dir, out, pkg)
	built[name] = err
	return out, err
}

func build(dir, out, pkg string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s %s: %v\n%s", out, pkg, err, b)
	}
	return nil
}

// CopyTo copies the binary of pkg, built as name, into dir (created if
// need be) and returns the copy's path: for a test that runs it where the
// cache directory cannot be reached, or where it must find the file.
func CopyTo(dir, name, pkg string) (string, error) {
	src, err := Build(name, pkg)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, name)
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	// io.Copy between files copies in the kernel (copy_file_range).
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

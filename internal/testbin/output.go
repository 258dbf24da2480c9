package testbin

import (
	"bytes"
	"sync"
)

// Output is a process's stdout or stderr that a test reads while the
// process still writes it: a bytes.Buffer behind a mutex.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

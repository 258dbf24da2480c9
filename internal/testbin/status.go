package testbin

import (
	"net/http"
	"strings"
)

// StatusWriter records the status a handler answered with (200 unless it
// set one) and the first kilobyte of an error answer's body, for tests
// that log what a server they wrap said.
type StatusWriter struct {
	http.ResponseWriter
	Status  int
	errBody strings.Builder
}

// NewStatusWriter wraps w.
func NewStatusWriter(w http.ResponseWriter) *StatusWriter {
	return &StatusWriter{ResponseWriter: w, Status: http.StatusOK}
}

func (w *StatusWriter) WriteHeader(code int) { w.Status = code; w.ResponseWriter.WriteHeader(code) }

func (w *StatusWriter) Write(p []byte) (int, error) {
	if w.Status >= 400 && w.errBody.Len() < 1024 {
		w.errBody.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// ErrorBody is the start of the answer's body when its status was an error.
func (w *StatusWriter) ErrorBody() string { return w.errBody.String() }

// Unwrap lets http.ResponseController reach the server's writer (flush).
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

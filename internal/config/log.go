package config

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
}

// IsTerminal reports whether f is a character device (a terminal), the test
// the "auto" log format uses.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Handler builds the slog handler for these settings writing to w; terminal
// says whether w is a terminal (it decides the "auto" format).
func (l Log) Handler(w io.Writer, terminal bool) slog.Handler {
	level, err := parseLevel(l.Level)
	if err != nil {
		level = slog.LevelInfo // validated at Parse; a zero Log means info
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: readableDurations}
	json := l.Format == "json" || (l.Format != "text" && !terminal)
	if json {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// NewLogger returns a logger for these settings writing to f (usually
// os.Stderr), text on a terminal and JSON otherwise unless a format is set.
func (l Log) NewLogger(f *os.File) *slog.Logger {
	return slog.New(l.Handler(f, IsTerminal(f)))
}

// readableDurations writes durations as "1.5s" rather than JSON's integer
// nanoseconds, so an operator reading a log line at 3 a.m. need not count zeros.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

package app

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
)

// newLogger builds the operator log: tint on a terminal, JSON otherwise
// (format "auto"), or as asked.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	switch format {
	case "", "auto":
		if isTerminal(w) {
			format = "text"
		} else {
			format = "json"
		}
	}
	var h slog.Handler
	switch format {
	case "text":
		h = tint.NewHandler(w, &tint.Options{Level: lv, TimeFormat: time.RFC3339Nano, NoColor: !isTerminal(w)})
	case "json":
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})
	default:
		return nil, fmt.Errorf("log format %q: want auto, text or json", format)
	}
	return slog.New(h), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// stdlogBridge routes the standard log package (quic-go writes its UDP
// buffer warning there) into slog at warn level, so nothing bypasses the
// operator log.
func stdlogBridge(l *slog.Logger) {
	log.SetFlags(0)
	log.SetOutput(writerFunc(func(p []byte) (int, error) {
		l.Warn(strings.TrimSpace(string(p)), "source", "quic-go")
		return len(p), nil
	}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

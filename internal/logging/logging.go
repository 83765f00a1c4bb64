// Package logging sets up the loader's log/slog logger: to stderr and to one file per day in a
// log directory (log_loader_YYYYMMDD.txt), keeping 30 days.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Retention is how long daily log files are kept.
const Retention = 30 * 24 * time.Hour

const (
	filePrefix = "log_loader_"
	fileSuffix = ".txt"
)

// Options configure New.
type Options struct {
	Dir    string // "" = stderr only
	Level  slog.Leveler
	JSON   bool      // JSON lines instead of text
	Stderr io.Writer // nil = os.Stderr
	Now    func() time.Time
}

// New returns a logger writing to Stderr and, when Dir is set, to the day's file in Dir. Files
// older than Retention are removed now and whenever the day changes. Close the returned closer
// to flush and close the current file.
func New(o Options) (*slog.Logger, io.Closer, error) {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var w io.Writer = o.Stderr
	var closer io.Closer = nopCloser{}
	if o.Dir != "" {
		df, err := OpenDaily(o.Dir, o.Now)
		if err != nil {
			return nil, nil, err
		}
		w = io.MultiWriter(o.Stderr, df)
		closer = df
	}
	hopts := &slog.HandlerOptions{Level: o.Level}
	var h slog.Handler
	if o.JSON {
		h = slog.NewJSONHandler(w, hopts)
	} else {
		h = slog.NewTextHandler(w, hopts)
	}
	return slog.New(h), closer, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// FileName is the log file name for the day of t.
func FileName(t time.Time) string { return filePrefix + t.Format("20060102") + fileSuffix }

// DailyFile is an io.Writer that appends to the current day's file, switching files at midnight.
type DailyFile struct {
	dir string
	now func() time.Time

	mu   sync.Mutex
	name string
	f    *os.File
}

// OpenDaily creates dir if needed, removes expired files and opens today's file.
func OpenDaily(dir string, now func() time.Time) (*DailyFile, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	d := &DailyFile{dir: dir, now: now}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.rotate(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *DailyFile) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if FileName(d.now()) != d.name {
		if err := d.rotate(); err != nil {
			return 0, err
		}
	}
	return d.f.Write(p)
}

// rotate opens the file for today and prunes old ones; d.mu must be held.
func (d *DailyFile) rotate() error {
	name := FileName(d.now())
	f, err := os.OpenFile(filepath.Join(d.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	if d.f != nil {
		d.f.Close()
	}
	d.f, d.name = f, name
	d.prune()
	return nil
}

// prune removes log files whose modification time is older than Retention. Errors are
// ignored: a file we cannot remove must not stop logging.
func (d *DailyFile) prune() {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return
	}
	cutoff := d.now().Add(-Retention)
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == d.name || !strings.HasPrefix(n, filePrefix) || !strings.HasSuffix(n, fileSuffix) {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(d.dir, n))
		}
	}
}

// Close closes the current file.
func (d *DailyFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDailyFileNameAndRetention(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 22, 23, 59, 0, 0, time.Local)
	old := filepath.Join(dir, "log_loader_20261020.txt")
	recent := filepath.Join(dir, "log_loader_20261101.txt")
	unrelated := filepath.Join(dir, "notes.txt")
	for _, p := range []string{old, recent, unrelated} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Chtimes(old, now.Add(-31*24*time.Hour), now.Add(-31*24*time.Hour)))
	must(t, os.Chtimes(recent, now.Add(-21*24*time.Hour), now.Add(-21*24*time.Hour)))
	must(t, os.Chtimes(unrelated, now.Add(-90*24*time.Hour), now.Add(-90*24*time.Hour)))

	clock := now
	var stderr bytes.Buffer
	log, closer, err := New(Options{Dir: dir, Level: slog.LevelInfo, Stderr: &stderr, Now: func() time.Time { return clock }})
	must(t, err)
	log.Info("first day")
	clock = now.Add(2 * time.Minute) // past midnight: a new file
	log.Info("second day")
	must(t, closer.Close())

	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("31-day-old log file still there (err=%v)", err)
	}
	for _, p := range []string{recent, unrelated} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	day1, err := os.ReadFile(filepath.Join(dir, "log_loader_20261122.txt"))
	must(t, err)
	day2, err := os.ReadFile(filepath.Join(dir, "log_loader_20261123.txt"))
	must(t, err)
	if !strings.Contains(string(day1), "first day") || strings.Contains(string(day1), "second day") {
		t.Errorf("day 1 file = %q", day1)
	}
	if !strings.Contains(string(day2), "second day") {
		t.Errorf("day 2 file = %q", day2)
	}
	if !strings.Contains(stderr.String(), "first day") || !strings.Contains(stderr.String(), "second day") {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestJSONAndLevel(t *testing.T) {
	var stderr bytes.Buffer
	log, closer, err := New(Options{Level: slog.LevelWarn, JSON: true, Stderr: &stderr})
	must(t, err)
	defer closer.Close()
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line, got %q", stderr.String())
	}
	var m map[string]any
	must(t, json.Unmarshal([]byte(lines[0]), &m))
	if m["msg"] != "shown" || m["k"] != float64(1) {
		t.Errorf("line = %v", m)
	}
}

func TestUnwritableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	must(t, os.WriteFile(file, nil, 0o600))
	if _, _, err := New(Options{Dir: filepath.Join(file, "sub")}); err == nil {
		t.Fatal("want an error for a log dir under a file")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

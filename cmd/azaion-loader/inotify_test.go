package main

import (
	"bytes"
	endian "encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// dirWatch reports, through inotify, every file created, written or moved into a set of
// directories (and the directories created below them) for as long as it runs. Unlike sampling
// the open files, it misses nothing, however short-lived the file.
type dirWatch struct {
	t    testing.TB
	fd   int
	f    *os.File // fd, for reads through the runtime poller (f.Fd would make it blocking)
	done chan struct{}

	mu     sync.Mutex
	dirs   map[int32]string // watch descriptor → directory
	events []string         // "path (what)"
	seen   chan struct{}    // closed and replaced at every event
}

const watchMask = syscall.IN_CREATE | syscall.IN_MOVED_TO | syscall.IN_MODIFY | syscall.IN_CLOSE_WRITE

func watchDirs(t testing.TB, dirs ...string) *dirWatch {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	w := &dirWatch{t: t, fd: fd, f: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{}), dirs: map[int32]string{}, seen: make(chan struct{})}
	for _, d := range dirs {
		if err := filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				w.add(p)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	go w.read()
	t.Cleanup(w.stop)
	return w
}

func (w *dirWatch) add(dir string) {
	wd, err := syscall.InotifyAddWatch(w.fd, dir, watchMask)
	if err != nil {
		w.t.Errorf("inotify watch %s: %v", dir, err)
		return
	}
	w.mu.Lock()
	w.dirs[int32(wd)] = dir
	w.mu.Unlock()
}

func (w *dirWatch) read() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.t.Errorf("inotify read: %v", err)
			}
			return
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			var ev syscall.InotifyEvent
			endian.Read(bytes.NewReader(buf[off:off+syscall.SizeofInotifyEvent]), endian.NativeEndian, &ev)
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			w.mu.Lock()
			path := filepath.Join(w.dirs[ev.Wd], name)
			w.mu.Unlock()
			if ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
				path = "(events lost: inotify queue overflow)"
			}
			if ev.Mask&syscall.IN_ISDIR != 0 && ev.Mask&syscall.IN_CREATE != 0 {
				w.add(path) // and below it: the directory itself is reported already
			}
			w.mu.Lock()
			w.events = append(w.events, path+" ("+maskText(ev.Mask)+")")
			close(w.seen)
			w.seen = make(chan struct{})
			w.mu.Unlock()
		}
	}
}

func maskText(m uint32) string {
	switch {
	case m&syscall.IN_CREATE != 0:
		return "created"
	case m&syscall.IN_MOVED_TO != 0:
		return "moved in"
	case m&syscall.IN_MODIFY != 0:
		return "written"
	case m&syscall.IN_CLOSE_WRITE != 0:
		return "closed after writing"
	}
	return "changed"
}

// waitFor waits until the event what ("created", "closed after writing", ...) on path has been
// seen: events come in order, so every earlier one on it has been seen too.
func (w *dirWatch) waitFor(path, what string) {
	w.t.Helper()
	want := path + " (" + what + ")"
	timeout := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		found := slices.Contains(w.events, want)
		seen := w.seen
		w.mu.Unlock()
		if found {
			return
		}
		select {
		case <-seen:
		case <-timeout:
			w.t.Fatalf("inotify never reported %s", want)
		}
	}
}

// take returns the events so far and forgets them.
func (w *dirWatch) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ev := w.events
	w.events = nil
	return ev
}

func (w *dirWatch) stop() {
	w.f.Close()
	<-w.done
}

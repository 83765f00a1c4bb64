package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Start makes the cache directory this process's: it takes a shared lock on DIR/.lock, held
// until Close, so that other processes can tell a live service. When no other process holds
// it, the temp files an interrupted run left (power cut, kill -9) are removed first; with a
// live service sharing the directory they are its files, and stay. Partial downloads are kept
// for resuming, except those nobody asked for in PartialMaxAge.
//
// Only a serving process calls Start: one-shot commands (unlock) neither lock nor sweep.
func (c *Cache) Start() error {
	if err := os.MkdirAll(c.dir, 0o750); err != nil {
		return fmt.Errorf("model cache: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(c.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("model cache lock: %w", err)
	}
	alone := flock(f, syscall.LOCK_EX|syscall.LOCK_NB) == nil
	if alone {
		c.removeTemps()
	} else {
		c.log.Info("model cache is shared with another running process: its temp files are left alone", "dir", c.dir)
	}
	// Converting the lock drops it first (flock(2)); a process starting in between finds
	// nobody, which is true: this one has nothing in flight yet.
	if err := flock(f, syscall.LOCK_SH); err != nil {
		f.Close()
		return fmt.Errorf("model cache lock: %w", err)
	}
	c.mu.Lock()
	c.lock = f
	c.mu.Unlock()
	c.SweepPartials()
	return nil
}

// Close releases the directory's lock.
func (c *Cache) Close() error {
	c.mu.Lock()
	f := c.lock
	c.lock = nil
	c.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Close() // closing the last descriptor releases the flock
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// removeTemps removes every temp file under the cache directory.
func (c *Cache) removeTemps() {
	n := 0
	c.walk(func(path string, fi os.FileInfo) {
		if isTemp(fi.Name()) && os.Remove(path) == nil {
			n++
		}
	})
	if n > 0 {
		c.log.Info("removed temp files an interrupted run left in the model cache", "count", n)
	}
}

// SweepPartials removes partial downloads that nobody asked for in PartialMaxAge (their last
// write and their sidecar are both older) and that this process is not writing.
func (c *Cache) SweepPartials() {
	cutoff := c.now().Add(-PartialMaxAge)
	c.mu.Lock()
	active := make(map[string]bool, len(c.active))
	for k := range c.active {
		active[c.partialPath(k)] = true
	}
	c.mu.Unlock()
	c.walk(func(path string, fi os.FileInfo) {
		name := fi.Name()
		if !strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".big.partial") || active[path] {
			return
		}
		last := fi.ModTime()
		if mfi, err := os.Stat(path + ".meta"); err == nil && mfi.ModTime().After(last) {
			last = mfi.ModTime()
		}
		if last.Before(cutoff) {
			os.Remove(path + ".meta")
			if os.Remove(path) == nil {
				c.log.Info("removed a partial download nobody asked for in 7 days", "file", path, "bytes", fi.Size(),
					"lastAsked", last.Format(time.RFC3339))
			}
		}
	})
}

// walk calls fn for every regular file in the folders of the cache directory.
func (c *Cache) walk(fn func(path string, fi os.FileInfo)) {
	folders, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, d := range folders {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(c.dir, d.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range files {
			if fi, err := f.Info(); err == nil && fi.Mode().IsRegular() {
				fn(filepath.Join(dir, f.Name()), fi)
			}
		}
	}
}

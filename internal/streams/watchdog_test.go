package streams_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/azaion/loader/internal/streams"
)

// In a synctest bubble time is virtual: the watchdog holds off while progress comes more often
// than its timeout, fires exactly one timeout after the last progress, and never after Stop.
func TestWatchdogFiresOnlyAfterATimeoutWithoutProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = time.Second
		fired := make(chan time.Time, 1)
		w := streams.NewWatchdog(timeout, func() { fired <- time.Now() })
		defer w.Stop()
		for range 10 {
			time.Sleep(timeout / 2)
			w.Progress(1)
		}
		last := time.Now()
		synctest.Wait()
		if w.Fired() {
			t.Fatal("fired while the stream made progress every half timeout")
		}
		at := <-fired
		if got := at.Sub(last); got != timeout {
			t.Errorf("fired %s after the last progress, want %s", got, timeout)
		}
		if !w.Fired() {
			t.Error("Fired() is false after fire was called")
		}
	})
}

func TestWatchdogStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := streams.NewWatchdog(time.Second, func() { t.Error("fired after Stop") })
		time.Sleep(time.Second / 2)
		w.Stop()
		time.Sleep(time.Hour)
		if w.Fired() {
			t.Error("Fired() after Stop")
		}
	})
}

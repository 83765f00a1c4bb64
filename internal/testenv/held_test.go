package testenv_test

import (
	"io"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/testenv"
)

func TestHeldBodyStopsHalfWay(t *testing.T) {
	release, reached := make(chan struct{}), make(chan struct{})
	body := testenv.HeldBody(io.NopCloser(strings.NewReader("abcdef")), 4, release, nil, func() { close(reached) })
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(body)
		got <- string(b)
	}()
	<-reached // the first 4 bytes went through, and the body waits
	close(release)
	if b := <-got; b != "abcdef" {
		t.Fatalf("read %q, want all of it after the release", b)
	}
}

func TestHeldBodyEndsWithItsRequest(t *testing.T) {
	done := make(chan struct{})
	body := testenv.HeldBody(io.NopCloser(strings.NewReader("abcdef")), 2, make(chan struct{}), done, func() { close(done) })
	b, err := io.ReadAll(body)
	if string(b) != "ab" || err == nil {
		t.Fatalf("read %q, %v; want the 2 bytes before the hold, then an error", b, err)
	}
}

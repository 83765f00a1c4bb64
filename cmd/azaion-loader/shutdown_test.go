package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// On SIGTERM the HTTP server drains before the unlocker closes: a POST /unlock in flight gets
// its answer, not a 500 from a closed unlocker. (Issue 11: serveHTTP closed the unlocker first.)
func TestShutdownAnswersAnInFlightUnlock(t *testing.T) {
	e := newTestEnv(t, envOptions{images: ulSpecImages[:1], tag: ulTag()}) // DOCKER_HOST: no daemon
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serveHTTP(ctx, ln, e.loader.handler(), e.loader) }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := testCreds()
	// With Expect: 100-continue the server says when the handler starts reading the body.
	fmt.Fprintf(conn, "POST /unlock HTTP/1.1\r\nHost: loader\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue, got %q %v", status, err)
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\r\n" {
		t.Fatalf("100 Continue not followed by a blank line: %q %v", blank, err)
	}

	cancel() // SIGTERM, while the handler waits for the body
	waitListenerClosed(t, ln.Addr().String())
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var v struct{ State string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil || v.State == "" {
		t.Fatalf("POST /unlock in flight at shutdown: %d %s, want 200 and a state", resp.StatusCode, b)
	}
	t.Logf("answered %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serveHTTP: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("serveHTTP did not return after the request was answered")
	}
}

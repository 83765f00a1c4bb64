package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	e := newTestEnv(t, envOptions{apiToken: "tok"}) // /health needs no token
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.srv.URL, "http://"))
	env := func(k string) string {
		if k == "LISTEN_ADDR" {
			return ":" + port
		}
		return ""
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"healthcheck"}, env, &out, &out); err != nil || strings.TrimSpace(out.String()) != "healthy" {
		t.Fatalf("healthcheck against a running loader (from LISTEN_ADDR): %v %q", err, out.String())
	}

	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, url := range []string{broken.URL + "/health", closed.URL + "/health"} {
		err := run(t.Context(), []string{"healthcheck", "--url", url, "--timeout", "2s"}, env, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "unhealthy") || exitCode(err, &out) != 1 {
			t.Errorf("healthcheck of %s: %v, want exit 1 saying unhealthy", url, err)
		}
	}
}

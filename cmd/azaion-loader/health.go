package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/azaion/loader/internal/config"
)

// runHealthcheck asks a running loader's GET /health and exits 0 only on 200, so a distroless
// image (no shell, no curl) can have a HEALTHCHECK. The address comes from LISTEN_ADDR, as the
// service's own does; /health needs no token.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newFlagSet("healthcheck", "healthcheck [--url URL]", stdout)
	cl := config.Register(fs.FlagSet, getenv)
	url := fs.String("url", "", "health URL to ask (default: http://127.0.0.1:<port of LISTEN_ADDR>/health)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *url == "" {
		cfg, err := cl.Load()
		if err != nil {
			return usageError{err}
		}
		_, port, _ := net.SplitHostPort(cfg.ListenAddr) // validated by Load
		*url = "http://" + net.JoinHostPort("127.0.0.1", port) + "/health"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered %s", *url, resp.Status)
	}
	fmt.Fprintln(stdout, "healthy")
	return nil
}

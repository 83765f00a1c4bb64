// Command testprobe is a helper of scripts/test.sh and scripts/parts.sh: it answers, with its exit
// status, whether a test part is up, so the scripts need neither curl nor the docker CLI.
//
//	testprobe freeport          print a free TCP port on 127.0.0.1
//	testprobe docker HOST       exit 0 when the Engine API at HOST (unix:///path or tcp://h:p) answers /_ping
//	testprobe http URL          exit 0 when GET URL answers 200
//	testprobe tpm DEVICE        exit 0 when the TPM at DEVICE (unix:///path or a device) answers
//
// Each probe is a single attempt bounded by 3 s; the scripts loop.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/azaion/loader/internal/tpm"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testprobe:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: testprobe freeport | docker HOST | http URL | tpm DEVICE")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	switch {
	case args[0] == "freeport" && len(args) == 1:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		_, err = fmt.Fprintln(stdout, l.Addr().(*net.TCPAddr).Port)
		return err
	case args[0] == "docker" && len(args) == 2:
		return pingDocker(ctx, args[1])
	case args[0] == "http" && len(args) == 2:
		return get(ctx, http.DefaultClient, args[1], "")
	case args[0] == "tpm" && len(args) == 2:
		_, err := (&tpm.Client{Device: args[1], Timeout: 3 * time.Second}).Info(ctx)
		return err
	}
	return fmt.Errorf("bad arguments %q", args)
}

func pingDocker(ctx context.Context, host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return err
	}
	var d net.Dialer
	tr := &http.Transport{DisableKeepAlives: true}
	switch u.Scheme {
	case "unix":
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", u.Path)
		}
	case "tcp":
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", u.Host)
		}
	default:
		return fmt.Errorf("unsupported docker host %q", host)
	}
	return get(ctx, &http.Client{Transport: tr}, "http://docker/_ping", "OK")
}

func get(ctx context.Context, c *http.Client, u, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if want != "" && strings.TrimSpace(string(body)) != want {
		return fmt.Errorf("GET %s: body %q, want %q", u, body, want)
	}
	return nil
}

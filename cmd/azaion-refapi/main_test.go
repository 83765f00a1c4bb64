package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// start runs run() on a free port and returns its base URL and the channel run's result
// arrives on.
func start(t *testing.T, ctx context.Context, args []string, env map[string]string) (string, <-chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, func(k string) string { return env[k] }, pw, io.Discard)
		pw.CloseWithError(errors.New("run returned"))
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no listening line: %v (run: %v)", err, <-done)
	}
	go io.Copy(io.Discard, pr) // keep later stdout writes from blocking
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "azaion-refapi listening on ")
	if !ok {
		t.Fatalf("unexpected first line %q", line)
	}
	return base, done
}

func post(t *testing.T, url, token string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func login(t *testing.T, base, email, password string) string {
	t.Helper()
	status, body := post(t, base+"/login", "", map[string]string{"email": email, "password": password})
	var out struct{ Token string }
	if status != 200 || json.Unmarshal(body, &out) != nil || out.Token == "" {
		t.Fatalf("login %s: %d %s", email, status, body)
	}
	return out.Token
}

func TestRunDemoUserAndShutdown(t *testing.T) {
	dir := t.TempDir()
	fragment := filepath.Join(dir, "fragment.bin")
	os.WriteFile(fragment, []byte("fragment-bytes"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Flags and their environment fallbacks together.
	base, done := start(t, ctx,
		[]string{"--listen", "127.0.0.1:0", "--key-fragment-file", fragment},
		map[string]string{"AZAION_REFAPI_DATA": filepath.Join(dir, "data")})

	token := login(t, base, demoEmail, demoPassword)
	req, _ := http.NewRequest(http.MethodGet, base+"/binary-split/key-fragment", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "fragment-bytes" {
		t.Fatalf("key fragment: %d %q", resp.StatusCode, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("the data directory from the environment was not created: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after the context was cancelled")
	}
	if _, err := http.Get(base + "/login"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestRunUsersFile(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	os.WriteFile(users, []byte("- {email: pilot@azaion.local, password: pw, role: Operator}\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := start(t, ctx, []string{"--listen", "127.0.0.1:0", "--data", dir},
		map[string]string{"AZAION_REFAPI_USERS": users, "AZAION_REFAPI_CDN_HOST": "http://cdn.local:9000"})
	login(t, base, "pilot@azaion.local", "pw")
	if status, _ := post(t, base+"/login", "", map[string]string{"email": demoEmail, "password": demoPassword}); status != 401 {
		t.Errorf("demo user with a users file: %d, want 401", status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunBadArguments(t *testing.T) {
	dir := t.TempDir()
	for name, args := range map[string][]string{
		"unknown flag":       {"--nope"},
		"extra argument":     {"--data", dir, "extra"},
		"bad lifetime":       {"--data", dir, "--token-lifetime", "-1h"},
		"bad max upload":     {"--data", dir, "--max-upload", "lots"},
		"bad log level":      {"--data", dir, "--log-level", "loud"},
		"missing users":      {"--data", dir, "--users", filepath.Join(dir, "none.yaml")},
		"missing fragment":   {"--data", dir, "--key-fragment-file", filepath.Join(dir, "none.bin")},
		"bad listen address": {"--data", dir, "--listen", "256.0.0.1:0"},
	} {
		if err := run(context.Background(), args, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
			t.Errorf("%s: run succeeded", name)
		}
	}
	var help bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, func(string) string { return "" }, io.Discard, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(help.String(), "AZAION_REFAPI_LISTEN") {
		t.Error("--help does not name the environment variables")
	}
}

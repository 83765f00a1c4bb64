package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/testenv"
)

// TestServeDev runs the README's first command in-process and follows the curl lines it prints.
func TestServeDev(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	var stdout, stderr testenv.SyncBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"serve", "--dev", "--listen-addr", "127.0.0.1:0",
			"--model-cache-dir", filepath.Join(dir, "models"), "--log-dir", filepath.Join(dir, "Logs")},
			func(string) string { return "" }, &stdout, &stderr)
	}()
	base := ""
	re := regexp.MustCompile(`curl -s (http://127\.0\.0\.1:\d+)/health`)
	for deadline := time.Now().Add(30 * time.Second); base == "" && time.Now().Before(deadline); {
		select {
		case err := <-errc:
			t.Fatalf("serve --dev stopped: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
		}
	}
	if base == "" {
		t.Fatalf("no curl lines printed:\n%s\n%s", stdout.String(), stderr.String())
	}
	post := func(path, ctype string, body io.Reader) (int, []byte) {
		resp, err := http.Post(base+path, ctype, body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// The printed login line works.
	if !strings.Contains(stdout.String(), fmt.Sprintf(`{"email":"%s","password":"%s"}`, devEmail, devPassword)) {
		t.Fatalf("the login line is not printed:\n%s", stdout.String())
	}
	if code, b := post("/login", "application/json", strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q}`, devEmail, devPassword))); code != 200 {
		t.Fatalf("login: %d %s", code, b)
	}
	code, got := post("/load/"+devModel, "application/json", strings.NewReader(`{"folder":"`+devFolder+`"}`))
	if code != 200 || !bytes.Equal(got, demoModel()) {
		t.Fatalf("load of the demo model: %d, %d bytes", code, len(got))
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("folder", "models")
	w, _ := mw.CreateFormFile("data", "mine.bin")
	w.Write([]byte("my model"))
	mw.Close()
	if code, b := post("/upload/mine.bin", mw.FormDataContentType(), &body); code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	if code, got := post("/load/mine.bin", "application/json", strings.NewReader(`{"folder":"models"}`)); code != 200 || string(got) != "my model" {
		t.Fatalf("load of the upload: %d %q", code, got)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve --dev after cancel: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve --dev did not stop")
	}
}

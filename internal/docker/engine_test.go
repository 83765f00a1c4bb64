package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/testenv"
)

func newEngine(t *testing.T, host string, opts ...docker.Option) *docker.Engine {
	t.Helper()
	e, err := docker.New(host, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestUnreachable(t *testing.T) {
	host := "unix://" + filepath.Join(t.TempDir(), "no-docker.sock")
	e := newEngine(t, host)
	ctx := testContext(t)

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, docker.ErrUnreachable) {
			t.Fatalf("%s: got %v, want ErrUnreachable", what, err)
		}
		if !strings.Contains(err.Error(), "docker daemon unreachable at "+host) {
			t.Errorf("%s: error %q does not name the host", what, err)
		}
	}
	check("Ping", e.Ping(ctx))
	t.Logf("unreachable: %v", e.Ping(ctx))
	_, err := e.ImageExists(ctx, "azaion/flights:latest")
	check("ImageExists", err)
	check("LoadImages", e.LoadImages(ctx, strings.NewReader("not read")))
}

func TestNewDefaultsToDockerHost(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///tmp/from-env.sock")
	if got := newEngine(t, "").Host(); got != "unix:///tmp/from-env.sock" {
		t.Errorf("Host() = %q, want DOCKER_HOST", got)
	}
	if got := newEngine(t, "unix:///tmp/given.sock").Host(); got != "unix:///tmp/given.sock" {
		t.Errorf("Host() = %q, want the given host", got)
	}
}

// fakeDaemon answers /images/load like dockerd does: 200 OK, then a JSON message stream.
func fakeDaemon(t *testing.T, load func(w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	srv := httptest.NewServer(daemonAPI(load))
	t.Cleanup(srv.Close)
	return "tcp://" + srv.Listener.Addr().String()
}

// daemonAPI is the fake daemon's Engine API: /_ping, and /images/load answered by load.
func daemonAPI(load http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			io.WriteString(w, "OK")
		case strings.HasSuffix(r.URL.Path, "/images/load"):
			load(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

func TestLoadImagesErrorInsideStream(t *testing.T) {
	host := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"stream":"Loading layer\n"}`+"\n")
		io.WriteString(w, `{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`+"\n")
	})
	err := newEngine(t, host).LoadImages(testContext(t), strings.NewReader("tar"))
	if err == nil || !strings.Contains(err.Error(), "docker rejected the image archive: unexpected EOF") {
		t.Fatalf("got %v, want the daemon's error from the stream", err)
	}
}

func TestLoadImagesSuccessStream(t *testing.T) {
	var got []byte
	host := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		io.WriteString(w, `{"stream":"Loaded image: azaion/flights:latest\n"}`+"\n")
	})
	if err := newEngine(t, host).LoadImages(testContext(t), strings.NewReader("the tar")); err != nil {
		t.Fatal(err)
	}
	if string(got) != "the tar" {
		t.Errorf("daemon received %q", got)
	}
}

func TestReadMessages(t *testing.T) {
	for _, c := range []struct{ name, stream, want string }{
		{"success", `{"stream":"Loaded image: a:b\n"}` + "\n" + `{"status":"sha256:00"}`, ""},
		{"empty", "", ""},
		{"errorDetail", `{"stream":"x"}{"errorDetail":{"message":"no space left"},"error":"no space left"}{"stream":"y"}`, "docker: no space left"},
		{"bare error of an older daemon", `{"error":"bad tar"}`, "docker: bad tar"},
		{"not JSON", `{"stream":`, "unexpected EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := docker.ReadMessages(strings.NewReader(c.stream))
			if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestLoadImagesReaderErrorWins(t *testing.T) {
	host := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"errorDetail":{"message":"unexpected EOF"}}`+"\n")
	})
	errCut := errors.New("archive cut off")
	src := &failingReader{r: bytes.NewReader(make([]byte, 1<<20)), err: errCut}
	err := newEngine(t, host).LoadImages(testContext(t), src)
	if !errors.Is(err, errCut) {
		t.Fatalf("got %v, want the reader's error", err)
	}
}

// Integration tests against a real dockerd.

func uniqueRefs(t *testing.T, repos ...string) []string {
	b := make([]byte, 4)
	rand.Read(b)
	tag := "t" + hex.EncodeToString(b)
	refs := make([]string, len(repos))
	for i, r := range repos {
		refs[i] = r + ":" + tag
	}
	return refs
}

func TestEngineLoad(t *testing.T) {
	host := testenv.DockerHost(t)
	e := newEngine(t, host)
	ctx := testContext(t)
	if err := e.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	refs := uniqueRefs(t, "azaion/enginetest-a", "azaion/enginetest-b")
	archive := dockertest.BuildArchive(t, host, refs)

	for _, ref := range refs {
		if ok, err := e.ImageExists(ctx, ref); err != nil || ok {
			t.Fatalf("before load: ImageExists(%s) = %v, %v; want false, nil", ref, ok, err)
		}
	}
	if err := e.LoadImages(ctx, bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		if ok, err := e.ImageExists(ctx, ref); err != nil || !ok {
			t.Fatalf("after load: ImageExists(%s) = %v, %v; want true, nil", ref, ok, err)
		}
	}
}

func TestEngineLoadNotATar(t *testing.T) {
	host := testenv.DockerHost(t)
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	err := newEngine(t, host).LoadImages(testContext(t), bytes.NewReader(junk))
	if err == nil {
		t.Fatal("loading random bytes succeeded")
	}
	if errors.Is(err, docker.ErrUnreachable) {
		t.Fatalf("got ErrUnreachable for a bad archive: %v", err)
	}
	t.Logf("error for a non-tar: %v", err)
}

func TestEngineLoadReaderFailsMidway(t *testing.T) {
	host := testenv.DockerHost(t)
	e := newEngine(t, host)
	ctx := testContext(t)
	refs := uniqueRefs(t, "azaion/enginetest-c")
	archive := dockertest.BuildArchive(t, host, refs)

	errCut := errors.New("archive cut off")
	src := &failingReader{r: bytes.NewReader(archive[:len(archive)/2]), err: errCut}
	if err := e.LoadImages(ctx, src); !errors.Is(err, errCut) {
		t.Fatalf("got %v, want the reader's error", err)
	}
	if ok, err := e.ImageExists(ctx, refs[0]); err != nil || ok {
		t.Fatalf("ImageExists(%s) = %v, %v after an aborted load; want false, nil", refs[0], ok, err)
	}
}

package main

// End-to-end tests of the unlock workflow (SPEC §2 /unlock, §4 archive key, §6): real HTTP to the
// loader wired as `serve` wires it, the reference Resource API, a real dockerd, and archives
// encrypted by the openssl command line tool, independently of our own encrypter.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moby/moby/client"

	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// ulSpecImages is SPEC §6's default DOCKER_IMAGES list, written out here rather than taken from
// the code under test.
var ulSpecImages = []string{
	"azaion/annotations",
	"azaion/flights",
	"azaion/detections",
	"azaion/gps-denied-onboard",
	"azaion/gps-denied-desktop",
	"azaion/autopilot",
	"azaion/ai-training",
}

// ulStateOrder is the order SPEC §6 gives the states of a successful run.
var ulStateOrder = []string{"authenticating", "downloading_key", "decrypting", "loading_images", "ready"}

// ulWaitLimit bounds one unlock in these tests.
const ulWaitLimit = 3 * time.Minute

var ulCreds = map[string]string{"email": testEmail, "password": testPassword}

// ulTag is a tag no other test (or run) uses, so tests do not see each other's images.
func ulTag() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

func ulRefs(images []string, tag string) []string {
	refs := make([]string, len(images))
	for i, img := range images {
		refs[i] = img + ":" + tag
	}
	return refs
}

// ulEncrypt writes IV ‖ AES-256-CBC(PKCS#7(plain)) with the key SHA-256(fragment) to path, made by
// `openssl enc`. The plaintext is piped to openssl: it is never written to disk.
func ulEncrypt(t testing.TB, fragment []byte, plain io.Reader, path string) {
	t.Helper()
	openssl := testenv.OpenSSL(t)
	key := sha256.Sum256(fragment)
	iv := make([]byte, 16)
	rand.Read(iv)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(iv); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(openssl, "enc", "-aes-256-cbc", "-K", hex.EncodeToString(key[:]), "-iv", hex.EncodeToString(iv))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = plain, f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl enc: %v\n%s", err, stderr.Bytes())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// ulOpenSSLDecrypt decrypts IV ‖ ciphertext made with SHA-256(fragment) with `openssl enc -d`.
func ulOpenSSLDecrypt(t testing.TB, fragment, archive []byte) []byte {
	t.Helper()
	if len(archive) < 16 {
		t.Fatalf("archive of %d bytes has no IV", len(archive))
	}
	key := sha256.Sum256(fragment)
	var out, stderr bytes.Buffer
	cmd := exec.Command(testenv.OpenSSL(t), "enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(key[:]), "-iv", hex.EncodeToString(archive[:16]))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(archive[16:]), &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl enc -d: %v\n%s", err, stderr.Bytes())
	}
	return out.Bytes()
}

// ulEngine is an Engine API client of the test dockerd, for the tests' own checks.
func ulEngine(t testing.TB, host string) *docker.Engine {
	t.Helper()
	eng, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// ulPresent reports, per ref, whether the daemon holds it.
func ulPresent(t testing.TB, eng *docker.Engine, refs []string) map[string]bool {
	t.Helper()
	got := make(map[string]bool, len(refs))
	for _, ref := range refs {
		ok, err := eng.ImageExists(context.Background(), ref)
		if err != nil {
			t.Fatalf("image exists %s: %v", ref, err)
		}
		got[ref] = ok
	}
	return got
}

func ulAssertLoaded(t testing.TB, eng *docker.Engine, refs []string) {
	t.Helper()
	for ref, ok := range ulPresent(t, eng, refs) {
		if !ok {
			t.Errorf("image %s is not in Docker after the unlock", ref)
		}
	}
}

func ulAssertNoneLoaded(t testing.TB, eng *docker.Engine, refs []string) {
	t.Helper()
	for ref, ok := range ulPresent(t, eng, refs) {
		if ok {
			t.Errorf("image %s was loaded, but the unlock failed", ref)
		}
	}
}

// ulStatus is GET /unlock/status. Error and the progress fields are pointers so that a missing
// field is told apart from a zero one.
type ulStatus struct {
	State      string  `json:"state"`
	Error      *string `json:"error"`
	BytesDone  *int64  `json:"bytesDone"`
	BytesTotal *int64  `json:"bytesTotal"`
}

func (s ulStatus) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (e *testEnv) ulStatus() ulStatus {
	e.t.Helper()
	code, body := e.do(http.MethodGet, "/unlock/status", nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /unlock/status: %d %s", code, body)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		e.t.Fatalf("GET /unlock/status: %v: %s", err, body)
	}
	for _, k := range []string{"state", "error"} {
		if _, ok := fields[k]; !ok {
			e.t.Fatalf("GET /unlock/status: no %q field: %s", k, body)
		}
	}
	var st ulStatus
	if err := json.Unmarshal(body, &st); err != nil {
		e.t.Fatalf("GET /unlock/status: %v: %s", err, body)
	}
	if (st.State == "error") != (st.Error != nil) {
		e.t.Errorf("GET /unlock/status: error must be set exactly in state error: %s", body)
	}
	return st
}

// ulPost posts the test account's credentials to /unlock and returns the state it answered.
func (e *testEnv) ulPost() string {
	e.t.Helper()
	code, body := e.postJSON("/unlock", ulCreds)
	if code != http.StatusOK {
		e.t.Fatalf("POST /unlock: %d %s", code, body)
	}
	var v struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.State == "" {
		e.t.Fatalf("POST /unlock: body %q is not {\"state\": ...}", body)
	}
	return v.State
}

// ulWait polls GET /unlock/status until the state is ready or error and returns the last status
// and every status seen (consecutive duplicates dropped).
func (e *testEnv) ulWait() (ulStatus, []ulStatus) {
	e.t.Helper()
	var trace []ulStatus
	deadline := time.Now().Add(ulWaitLimit)
	for {
		st := e.ulStatus()
		if n := len(trace); n == 0 || trace[n-1].String() != st.String() {
			trace = append(trace, st)
		}
		if st.State == "ready" || st.State == "error" {
			return st, trace
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("unlock still %s after %v; seen %v", st.State, ulWaitLimit, trace)
		}
		time.Sleep(20 * time.Millisecond) // several unlock tests poll at once under -race
	}
}

// ulUnlockError starts an unlock that must fail and returns its reason.
func (e *testEnv) ulUnlockError() string {
	e.t.Helper()
	if first := e.ulPost(); first != "authenticating" {
		e.t.Fatalf("POST /unlock answered %s; want authenticating, a run that starts (and fails)", first)
	}
	st, trace := e.ulWait()
	if st.State != "error" {
		e.t.Fatalf("unlock ended in %s, want error; seen %v", st.State, trace)
	}
	return *st.Error
}

// ulAssertReadable checks that an error reason is a sentence for a person: valid UTF-8, printable,
// no JSON, not a page long.
func ulAssertReadable(t testing.TB, reason string) {
	t.Helper()
	if !utf8.ValidString(reason) || len(reason) > 600 || strings.Contains(reason, `{"`) {
		t.Errorf("reason is not readable: %q", reason)
	}
	for _, r := range reason {
		if !unicode.IsPrint(r) {
			t.Errorf("reason holds the unprintable %U: %q", r, reason)
			return
		}
	}
}

// ulSaveEncrypted saves refs from the daemon straight into openssl, writing the encrypted archive
// to path, then removes the images so that loading them is observable.
func ulSaveEncrypted(t testing.TB, host string, refs []string, fragment []byte, path string) {
	t.Helper()
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := cli.ImageSave(ctx, refs)
	if err != nil {
		t.Fatalf("save %v: %v", refs, err)
	}
	ulEncrypt(t, fragment, res, path)
	res.Close()
	dockertest.RemoveImages(t, host, refs)
}

func ulSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// 1. The whole cycle with the seven images of SPEC §6.
func TestUnlockE2EFullCycle(t *testing.T) {
	t.Parallel()
	tag := ulTag()
	e := newTestEnv(t, envOptions{docker: true, tag: tag})
	if !slices.Equal(e.cfg.DockerImages, ulSpecImages) {
		t.Fatalf("default DOCKER_IMAGES %v, SPEC §6 says %v", e.cfg.DockerImages, ulSpecImages)
	}
	refs := ulRefs(ulSpecImages, tag)
	ulEncrypt(t, e.fragment, bytes.NewReader(dockertest.BuildArchive(t, e.cfg.DockerHost, refs)), e.cfg.ImagesPath)
	size := ulSize(t, e.cfg.ImagesPath)

	if st := e.ulStatus(); st.State != "idle" {
		t.Errorf("before any unlock the state is %s, want idle", st.State)
	}
	// SPEC §2: a POST that starts a run answers authenticating.
	first := e.ulPost()
	if first != "authenticating" {
		t.Fatalf("POST /unlock answered %q, want authenticating", first)
	}
	final, trace := e.ulWait()
	t.Logf("POST answered %s; states seen: %v", first, trace)
	if final.State != "ready" {
		t.Fatalf("unlock ended in %s: %v", final, trace)
	}

	// States only move forward, in SPEC order; progress only grows and stays within the total.
	last, lastDone := slices.Index(ulStateOrder, first), int64(0)
	for _, st := range trace {
		i := slices.Index(ulStateOrder, st.State)
		if i < 0 {
			t.Errorf("state %q during a successful unlock", st.State)
			continue
		}
		if i < last {
			t.Errorf("state went back to %s after %s: %v", st.State, ulStateOrder[last], trace)
		}
		last = i
		if st.BytesDone == nil || st.BytesTotal == nil {
			t.Errorf("status without bytesDone/bytesTotal: %v", st)
			continue
		}
		if *st.BytesDone < lastDone || (*st.BytesTotal > 0 && *st.BytesDone > *st.BytesTotal) {
			t.Errorf("progress went back or beyond the total: %v", trace)
		}
		lastDone = *st.BytesDone
	}
	if final.BytesDone == nil || final.BytesTotal == nil || *final.BytesTotal != size || *final.BytesDone != size {
		t.Errorf("final progress %v, want bytesDone = bytesTotal = %d (the archive size)", final, size)
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
	if n := e.ref.Calls(refapi.EndpointKeyFragment); n != 1 {
		t.Errorf("key fragment fetched %d times, want 1", n)
	}
	m := scrape(t, e)
	for metric, want := range map[string]float64{
		`azaion_loader_unlock_runs_total{outcome="ready"}`:                         1,
		`azaion_loader_unlock_state{state="ready"}`:                                1,
		`azaion_loader_unlock_state{state="error"}`:                                0,
		`azaion_loader_unlock_archive_bytes_total`:                                 float64(size),
		`azaion_loader_bytes_decrypted_total{what="archive"}`:                      float64(size),
		`azaion_loader_upstream_calls_total{endpoint="key-fragment",outcome="ok"}`: 1,
	} {
		if got, ok := m[metric]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", metric, got, ok, want)
		}
	}
	e.assertNoSecrets(hex.EncodeToString(ulSHA256(e.fragment)))
}

func ulSHA256(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// 2. Images already there: ready at once, without a word upstream.
func TestUnlockE2EAlreadyLoaded(t *testing.T) {
	t.Parallel()
	tag := ulTag()
	images := ulSpecImages[:2]
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
	refs := ulRefs(images, tag)
	archive := dockertest.BuildArchive(t, e.cfg.DockerHost, refs)
	eng := ulEngine(t, e.cfg.DockerHost)
	if err := eng.LoadImages(context.Background(), bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	// No archive on disk at all: the images being there is what counts.
	if _, err := os.Stat(e.cfg.ImagesPath); !os.IsNotExist(err) {
		t.Fatalf("archive %s should not exist: %v", e.cfg.ImagesPath, err)
	}
	for range 2 {
		if got := e.ulPost(); got != "ready" {
			t.Fatalf("POST /unlock answered %s, want ready at once", got)
		}
	}
	if st := e.ulStatus(); st.State != "ready" {
		t.Errorf("status %v, want ready", st)
	}
	for _, ep := range []string{refapi.EndpointLogin, refapi.EndpointKeyFragment} {
		if n := e.ref.Calls(ep); n != 0 {
			t.Errorf("the reference API saw %d %s calls, want none", n, ep)
		}
	}
}

// 3. No archive and no images: 404 with the seed's detail.
func TestUnlockE2EArchiveMissing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, envOptions{docker: true, images: ulSpecImages[:2], tag: ulTag()})
	code, body := e.postJSON("/unlock", ulCreds)
	if code != http.StatusNotFound || detail(t, body) != "Encrypted archive not found" {
		t.Fatalf("POST /unlock: %d %s, want 404 Encrypted archive not found", code, body)
	}
	for _, bad := range []string{`{"email":"` + testEmail + `"}`, `{"password":"x"}`, `not json`} {
		if code, body := e.postJSON("/unlock", bad); code != http.StatusUnprocessableEntity {
			t.Errorf("POST /unlock %s: %d %s, want 422", bad, code, body)
		}
	}
	if n := e.ref.Calls(refapi.EndpointLogin) + e.ref.Calls(refapi.EndpointKeyFragment); n != 0 {
		t.Errorf("the reference API saw %d calls, want none", n)
	}
	if st := e.ulStatus(); st.State != "idle" {
		t.Errorf("status %v, want idle", st)
	}
}

// 4. Archives that must not unlock, each with a reason a person can act on.
func TestUnlockE2EBadArchives(t *testing.T) {
	t.Parallel()
	images := ulSpecImages[:2]
	setup := func(t *testing.T) (*testEnv, []string, []byte) {
		tag := ulTag()
		e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
		refs := ulRefs(images, tag)
		return e, refs, dockertest.BuildArchive(t, e.cfg.DockerHost, refs)
	}

	t.Run("wrong key fragment", func(t *testing.T) {
		t.Parallel()
		e, refs, archive := setup(t)
		ulEncrypt(t, e.fragment, bytes.NewReader(archive), e.cfg.ImagesPath)
		other := make([]byte, len(e.fragment))
		rand.Read(other)
		e.ref.SetKeyFragment(other)
		reason := e.ulUnlockError()
		t.Logf("reason: %s", reason)
		if !strings.Contains(strings.ToLower(reason), "wrong key") {
			t.Errorf("reason %q does not name a wrong key", reason)
		}
		ulAssertReadable(t, reason)
		ulAssertNoneLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)

		// A new POST after the error starts again, and with the right fragment it unlocks.
		e.ref.SetKeyFragment(e.fragment)
		if st := e.ulPost(); st != "authenticating" {
			t.Fatalf("POST /unlock after error answered %s, want a new run (authenticating)", st)
		}
		if st, trace := e.ulWait(); st.State != "ready" {
			t.Fatalf("second unlock ended in %v", trace)
		}
		ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
		e.assertNoSecrets(hex.EncodeToString(other))
	})

	for _, cut := range []int64{1, 4096} {
		t.Run(fmt.Sprintf("truncated by %d bytes", cut), func(t *testing.T) {
			t.Parallel()
			e, refs, archive := setup(t)
			ulEncrypt(t, e.fragment, bytes.NewReader(archive), e.cfg.ImagesPath)
			if err := os.Truncate(e.cfg.ImagesPath, ulSize(t, e.cfg.ImagesPath)-cut); err != nil {
				t.Fatal(err)
			}
			reason := e.ulUnlockError()
			t.Logf("reason: %s", reason)
			low := strings.ToLower(reason)
			if !strings.Contains(low, "truncated") && !strings.Contains(low, "corrupt") {
				t.Errorf("reason %q says neither truncated nor corrupted", reason)
			}
			ulAssertReadable(t, reason)
			ulAssertNoneLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
			e.assertNoSecrets()
		})
	}

	t.Run("not a tar", func(t *testing.T) {
		t.Parallel()
		e, refs, _ := setup(t)
		junk := make([]byte, 256<<10+7)
		rand.Read(junk)
		ulEncrypt(t, e.fragment, bytes.NewReader(junk), e.cfg.ImagesPath)
		reason := e.ulUnlockError()
		t.Logf("reason: %s", reason)
		if !strings.Contains(strings.ToLower(reason), "docker") {
			t.Errorf("reason %q does not say Docker refused the archive", reason)
		}
		ulAssertReadable(t, reason)
		ulAssertNoneLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
		e.assertNoSecrets()
	})

	t.Run("one image missing from the archive", func(t *testing.T) {
		t.Parallel()
		tag := ulTag()
		e := newTestEnv(t, envOptions{docker: true, tag: tag}) // all seven expected
		refs := ulRefs(ulSpecImages, tag)
		ulEncrypt(t, e.fragment, bytes.NewReader(dockertest.BuildArchive(t, e.cfg.DockerHost, refs[:6])), e.cfg.ImagesPath)
		reason := e.ulUnlockError()
		t.Logf("reason: %s", reason)
		if !strings.Contains(reason, refs[6]) {
			t.Errorf("reason %q does not name the missing %s", reason, refs[6])
		}
		for _, ref := range refs[:6] {
			if strings.Contains(reason, ref) {
				t.Errorf("reason %q names %s, which was loaded", reason, ref)
			}
		}
		ulAssertReadable(t, reason)
		e.assertNoSecrets()
	})
}

// 5a. DOCKER_HOST names a socket nobody listens on.
func TestUnlockE2EDockerHostMissing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, envOptions{images: ulSpecImages[:2], tag: ulTag()})
	if err := os.WriteFile(e.cfg.ImagesPath, make([]byte, 64), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := e.postJSON("/unlock", ulCreds)
	if code != http.StatusOK {
		t.Fatalf("POST /unlock: %d %s", code, body)
	}
	st, trace := e.ulWait()
	if st.State != "error" || !strings.Contains(strings.ToLower(*st.Error), "unreachable") {
		t.Fatalf("unlock ended in %v, want an error saying Docker is unreachable", trace)
	}
	t.Logf("reason: %s", *st.Error)
	ulAssertReadable(t, *st.Error)
}

// 5b. dockerd stopped, then started again: the error says so, and a new unlock works.
// Not parallel: it stops the daemon every other test uses.
func TestUnlockE2EDockerStopped(t *testing.T) {
	images := ulSpecImages[:3]
	tag := ulTag()
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
	refs := ulRefs(images, tag)
	ulEncrypt(t, e.fragment, bytes.NewReader(dockertest.BuildArchive(t, e.cfg.DockerHost, refs)), e.cfg.ImagesPath)

	testenv.StopDocker(t)
	code, body := e.postJSON("/unlock", ulCreds)
	if code != http.StatusOK || !strings.Contains(string(body), `"state":"error"`) {
		t.Fatalf("POST /unlock with dockerd down: %d %s, want 200 and the state error", code, body)
	}
	st, trace := e.ulWait()
	if st.State != "error" || !strings.Contains(strings.ToLower(*st.Error), "unreachable") {
		t.Fatalf("unlock with dockerd down ended in %v, want an error saying Docker is unreachable", trace)
	}
	t.Logf("reason: %s", *st.Error)
	ulAssertReadable(t, *st.Error)

	testenv.StartDocker(t)
	if got := e.ulPost(); got != "authenticating" {
		t.Fatalf("POST /unlock after dockerd is back answered %s, want a new run (authenticating)", got)
	}
	if st, trace := e.ulWait(); st.State != "ready" {
		t.Fatalf("unlock after dockerd is back ended in %v", trace)
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
	e.assertNoSecrets()
}

// 6. Many operators pressing the button at once: one workflow.
func TestUnlockE2EConcurrentPosts(t *testing.T) {
	t.Parallel()
	images := ulSpecImages[:3]
	tag := ulTag()
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
	refs := ulRefs(images, tag)
	ulEncrypt(t, e.fragment, bytes.NewReader(dockertest.BuildArchive(t, e.cfg.DockerHost, refs)), e.cfg.ImagesPath)

	const n = 20
	var wg sync.WaitGroup
	answers := make([]string, n)
	codes := make([]int, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/unlock", strings.NewReader(`{"email":"`+testEmail+`","password":"`+testPassword+`"}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var v struct {
				State string `json:"state"`
			}
			json.NewDecoder(resp.Body).Decode(&v)
			codes[i], answers[i] = resp.StatusCode, v.State
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if codes[i] != http.StatusOK || !slices.Contains(ulStateOrder, answers[i]) {
			t.Errorf("POST %d answered %d %q", i, codes[i], answers[i])
		}
	}
	if st, trace := e.ulWait(); st.State != "ready" {
		t.Fatalf("unlock ended in %v", trace)
	}
	t.Logf("answers: %v", answers)
	if got := e.ref.Calls(refapi.EndpointKeyFragment); got != 1 {
		t.Errorf("key fragment fetched %d times by %d concurrent POST /unlock, want 1 (one workflow)", got, n)
	}
	if got := e.ref.Calls(refapi.EndpointLogin); got != 1 {
		t.Errorf("%d logins by %d concurrent POST /unlock, want 1", got, n)
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
}

// 7. No decrypted byte reaches the disk: while the archive streams into Docker, no file is
// created, written or moved in anywhere this process writes (TMPDIR, the working directory, the
// directory of the archive, the model cache and the logs; in the logs only the log file), as
// inotify reports it: however short-lived, a plaintext file would be seen. Not parallel: it
// changes the working directory and TMPDIR.
func TestUnlockE2ENoPlaintextOnDisk(t *testing.T) {
	const layer = 64 << 20
	image := "azaion/annotations"
	tag := ulTag()
	e := newTestEnv(t, envOptions{docker: true, images: []string{image}, tag: tag})
	ref := image + ":" + tag
	dockertest.RandomImage(t, e.cfg.DockerHost, ref, layer)
	ulSaveEncrypted(t, e.cfg.DockerHost, []string{ref}, e.fragment, e.cfg.ImagesPath)
	t.Logf("archive: %d bytes", ulSize(t, e.cfg.ImagesPath))

	tmp, cwd := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Chdir(cwd)
	for _, d := range []string{e.cfg.ModelCacheDir, e.cfg.LogDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	w := watchDirs(t, tmp, cwd, filepath.Dir(e.cfg.ImagesPath), e.cfg.ModelCacheDir, e.cfg.LogDir)
	// The watch sees a file that lives for an instant, in each place.
	for _, d := range []string{tmp, cwd, filepath.Dir(e.cfg.ImagesPath), e.cfg.ModelCacheDir} {
		probe := filepath.Join(d, "probe")
		if err := os.WriteFile(probe, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Remove(probe)
		w.waitFor(probe, "closed after writing") // its last event
	}
	w.take()

	first := e.ulPost()
	st, trace := e.ulWait()
	if st.State != "ready" {
		t.Fatalf("unlock (POST answered %s) ended in %v", first, trace)
	}
	e.loader.logCloser.Close() // the last writes of the log file, before the watch ends
	var states []string
	for _, s := range trace {
		if !slices.Contains(states, s.State) {
			states = append(states, s.State)
		}
	}
	t.Logf("states %v", states)
	for _, ev := range w.take() {
		if !strings.HasPrefix(ev, e.cfg.LogDir+string(filepath.Separator)+"log_loader_") {
			t.Errorf("the unlock touched a file: %s", ev)
		}
	}
	for _, dir := range []string{tmp, cwd} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range entries {
			t.Errorf("the unlock left %s in %s", de.Name(), dir)
		}
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), []string{ref})
}

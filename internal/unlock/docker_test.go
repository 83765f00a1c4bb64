package unlock_test

// Integration tests: the Unlocker with a fake upstream and the real Engine against a real dockerd.

import (
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/unlock"
)

// uniqueTag keeps test runs independent of each other and of what the daemon already holds.
func uniqueTag() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

type dockerSetup struct {
	host     string
	engine   *docker.Engine
	tag      string
	refs     []string
	fragment []byte
	up       *fakeUpstream
}

func newDockerSetup(t *testing.T) *dockerSetup {
	host := testenv.DockerHost(t)
	testenv.OpenSSL(t)
	e, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	d := &dockerSetup{host: host, engine: e, tag: uniqueTag(), fragment: randomBytes(32)}
	d.refs = refs(config.DefaultImages, d.tag)
	d.up = &fakeUpstream{fragment: d.fragment}
	t.Cleanup(func() { dockertest.RemoveImages(t, host, d.refs) })
	return d
}

func (d *dockerSetup) unlocker(t *testing.T, archivePath string) *unlock.Unlocker {
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: archivePath, Tag: d.tag}, d.up, d.engine)
	t.Cleanup(u.Close)
	return u
}

// present returns which of refs the daemon holds.
func (d *dockerSetup) present(t *testing.T) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for _, ref := range d.refs {
		ok, err := d.engine.ImageExists(t.Context(), ref)
		if err != nil {
			t.Fatal(err)
		}
		got[ref] = ok
	}
	return got
}

func TestDockerUnlock(t *testing.T) {
	d := newDockerSetup(t)
	archive := encryptArchive(t, d.fragment, dockertest.BuildArchive(t, d.host, d.refs))
	u := d.unlocker(t, archive)

	st := runToEnd(t, u)
	if st.State != unlock.StateReady || st.BytesDone != st.BytesTotal || st.BytesTotal == 0 {
		t.Fatalf("status %+v, want ready with all bytes done", st)
	}
	for ref, ok := range d.present(t) {
		if !ok {
			t.Errorf("%s not loaded", ref)
		}
	}
	// Loaded now: a second unlock answers ready without going upstream.
	if st, err := u.Start(t.Context(), testEmail, testPassword); err != nil || st != unlock.StateReady {
		t.Errorf("Start after the load = %q, %v; want ready", st, err)
	}
	if n := d.up.logins.Load(); n != 1 {
		t.Errorf("%d logins, want 1", n)
	}
}

func TestDockerUnlockImageMissing(t *testing.T) {
	d := newDockerSetup(t)
	missing := "azaion/flights:" + d.tag
	var partial []string
	for _, ref := range d.refs {
		if ref != missing {
			partial = append(partial, ref)
		}
	}
	archive := encryptArchive(t, d.fragment, dockertest.BuildArchive(t, d.host, partial))

	st := runToEnd(t, d.unlocker(t, archive))
	if st.State != unlock.StateError || st.Error != "image "+missing+" missing after load" {
		t.Fatalf("status %+v, want error naming %s", st, missing)
	}
	for ref, ok := range d.present(t) {
		if ok != (ref != missing) {
			t.Errorf("%s present = %v", ref, ok)
		}
	}
}

func TestDockerUnlockNotATar(t *testing.T) {
	d := newDockerSetup(t)
	archive := encryptArchive(t, d.fragment, randomBytes(200<<10))
	st := runToEnd(t, d.unlocker(t, archive))
	if st.State != unlock.StateError || !strings.Contains(st.Error, "docker rejected the image archive") {
		t.Fatalf("status %+v, want Docker's reason", st)
	}
	t.Logf("reason: %s", st.Error)
}

func TestDockerUnlockWrongKey(t *testing.T) {
	d := newDockerSetup(t)
	archive := encryptArchive(t, d.fragment, dockertest.BuildArchive(t, d.host, d.refs))
	d.up.fragment = randomBytes(32)
	st := runToEnd(t, d.unlocker(t, archive))
	if st.State != unlock.StateError || !strings.Contains(st.Error, "wrong key") {
		t.Fatalf("status %+v, want wrong key", st)
	}
	for ref, ok := range d.present(t) {
		if ok {
			t.Errorf("%s loaded with a wrong key", ref)
		}
	}
}

func TestDockerUnlockStreamCut(t *testing.T) {
	d := newDockerSetup(t)
	plain := dockertest.BuildArchive(t, d.host, d.refs)
	archive := encryptArchive(t, d.fragment, plain)
	u := d.unlocker(t, archive)
	unlock.SetDecrypter(u, cutDecrypter(int64(len(plain)/2)))

	st := runToEnd(t, u)
	if st.State != unlock.StateError || !strings.Contains(st.Error, "truncated") {
		t.Fatalf("status %+v, want the archive truncated", st)
	}
	for ref, ok := range d.present(t) {
		if ok {
			t.Errorf("%s loaded from a cut stream", ref)
		}
	}
}

func TestDockerUnreachable(t *testing.T) {
	host := "unix://" + filepath.Join(t.TempDir(), "docker.sock")
	e, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fragment := randomBytes(32)
	archive := encryptArchive(t, fragment, randomBytes(1024))
	up := &fakeUpstream{fragment: fragment}
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: archive}, up, e)
	defer u.Close()

	st, err := u.Start(t.Context(), testEmail, testPassword)
	if err != nil || st != unlock.StateError {
		t.Fatalf("Start = %q, %v; want error state", st, err)
	}
	reason := u.Status().Error
	if !strings.Contains(reason, "unreachable") || !strings.Contains(reason, host) || !strings.Contains(reason, "is dockerd running?") {
		t.Errorf("reason %q does not say Docker is unreachable at %s", reason, host)
	}
	if err := u.Run(t.Context(), testEmail, testPassword); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Run: %v", err)
	}
}

package main

// The sealed device identity (SPEC §12) through the built binary, against real TPM simulators
// (swtpm): sealing, starting with a sealed file, and every way a start must refuse it.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// deviceConf is a provisioning record's device config for the test account.
func deviceConf() string {
	return fmt.Sprintf("# provisioned for drone 17\nAZAION_DEVICE_EMAIL=%s\nAZAION_DEVICE_PASSWORD='%s'\n", testEmail, testPassword)
}

// sealFor seals deviceConf() with the TPM at dev, from standard input, and returns the file.
func sealFor(t *testing.T, dev string, extra ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "device.sealed")
	r := runBin(t, "", deviceConf(), nil, append([]string{"device", "seal", "--in", "-", "--out", out, "--tpm", dev}, extra...)...)
	if r.code != 0 {
		t.Fatalf("device seal: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	noSecrets(t, []string{r.stdout, r.stderr}, testPassword, testEmail)
	return out
}

// serveEnv is the environment of a loader that starts with the sealed file at path.
func serveEnv(t *testing.T, e *testEnv, path, dev string, extra ...string) []string {
	return append([]string{"RESOURCE_API_URL=" + e.refSrv.URL, "MODEL_CACHE_DIR=" + t.TempDir(), "LOG_DIR=" + t.TempDir(),
		"LOG_LEVEL=debug", "DEVICE_CONFIG=" + path, "TPM_DEVICE=" + dev}, extra...)
}

// refused runs serve, which must exit at once with code and one line saying want.
func refused(t *testing.T, env []string, code int, want ...string) result {
	t.Helper()
	r := runBin(t, "", "", env, "serve", "--listen-addr", "127.0.0.1:0")
	if r.code != code {
		t.Fatalf("serve: exit %d, want %d\n%s%s", r.code, code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 1 {
		t.Errorf("want one line, got:\n%s", r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("the message does not say %q:\n%s", w, r.stderr)
		}
	}
	noSecrets(t, []string{r.stdout, r.stderr}, testPassword, testEmail)
	return r
}

func TestSealedIdentityStartsTheLoader(t *testing.T) {
	dev := testenv.SWTPM(t)
	e := newTestEnv(t, envOptions{})
	path := sealFor(t, dev)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the sealed file: %v, mode %v; want 0600", err, fi.Mode())
	}
	p := startProcess(t, serveEnv(t, e, path, dev)...)
	if !strings.Contains(p.stderr.String(), `msg="device identity loaded" file=`+path) {
		t.Fatalf("the loader did not log the identity:\n%s", p.stderr.String())
	}
	// The unsealed identity logs in by itself (SPEC §10): once, and then there is nothing to unlock.
	st := p.pollStatus(t, "the unattended login", time.Minute, func(s statusBody) bool { return s.Unattended.State == "done" || s.Unattended.State == "failed" })
	if st.Unattended.State != "done" || !st.Authenticated || e.ref.Calls(refapi.EndpointLogin) != 1 {
		t.Errorf("after the start: %v with %d logins; want done, logged in once", st, e.ref.Calls(refapi.EndpointLogin))
	}
	p.cmd.Process.Kill()
	<-p.done
	e.checkNoSecrets(p.stderr.String())
	noSecrets(t, []string{p.stderr.String()}, testPassword, testEmail)
}

// TestSealedFileHoldsNoSecret: no 4-byte piece of the password or the email is in the sealed
// file, sealed from a file or from standard input, with or without PCRs: not in its text, and not
// in the blobs its base64 and hex fields decode to. Every 4-byte piece of these credentials holds
// a character that neither base64 nor hex nor the file's fixed text uses, so a match in the text
// can only be a leak, and a chance match in the decoded blobs is about one in a million.
func TestSealedFileHoldsNoSecret(t *testing.T) {
	dev := testenv.SWTPM(t)
	const email, password = "dr!o~ne^17|@fl%ee&t.ex*am!pl~e", "Hu!nt~er^2|is%my&pa*ss!wo~rd^ok"
	conf := fmt.Sprintf("AZAION_DEVICE_EMAIL=%s\nAZAION_DEVICE_PASSWORD=%s\n", email, password)
	dir := t.TempDir()
	confPath := filepath.Join(dir, "device.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var files []string
	for i, args := range [][]string{
		{"--in", confPath, "--srk", "rsa-2048"},
		{"--in", "-"},
		{"--in", "-", "--pcrs", "7"},
	} {
		out := filepath.Join(dir, fmt.Sprintf("device-%d.sealed", i))
		r := runBin(t, "", conf, nil, append([]string{"device", "seal", "--out", out, "--tpm-device", dev}, args...)...)
		if r.code != 0 {
			t.Fatalf("seal %v: exit %d\n%s", args, r.code, r.stderr)
		}
		for _, o := range []string{r.stdout, r.stderr} {
			if strings.Contains(o, password) || strings.Contains(o, email) {
				t.Errorf("seal %v printed a credential: %s", args, o)
			}
		}
		files = append(files, out)
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte(device.SealedHeader+"\n")) {
			t.Fatalf("%s does not start with the header", path)
		}
		s, err := device.ParseSealed(data)
		if err != nil {
			t.Fatal(err)
		}
		blobs := [][]byte{data, s.SRKName}
		for _, o := range s.Objects {
			blobs = append(blobs, o.Public, o.Private)
		}
		for _, secret := range []string{password, email} {
			for i := 0; i+4 <= len(secret); i++ {
				for _, b := range blobs {
					if bytes.Contains(b, []byte(secret[i:i+4])) {
						t.Errorf("%s holds %q, a piece of a credential", filepath.Base(path), secret[i:i+4])
					}
				}
			}
		}
	}
}

func TestSealedForAnotherTPM(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	path := sealFor(t, testenv.SWTPM(t))
	b := testenv.NewSWTPM(t)
	refused(t, serveEnv(t, e, path, b.Device), 2, "device config "+path, "sealed for another TPM", "device seal --in - --out "+path)
}

// TestSealedFileDamaged changes one byte of the sealed file at several places. A change the
// file's checksum catches and a change forged past the checksum (which only the TPM's integrity
// check catches) both stop the start with exit code 2 and "damaged".
func TestSealedFileDamaged(t *testing.T) {
	dev := testenv.SWTPM(t)
	e := newTestEnv(t, envOptions{})
	path := sealFor(t, dev)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objLine := bytes.Index(good, []byte("\nobject: ")) + len("\nobject: ")
	space := objLine + bytes.IndexByte(good[objLine:], ' ')
	at := map[string]int{
		"header":       3,
		"version":      len(device.SealedHeader) - 1,
		"storage key":  bytes.Index(good, []byte("srk-name: ")) + 20,
		"public area":  objLine + 30,
		"private area": space + 40,
		"checksum":     len(good) - 5,
	}
	for where, i := range at {
		t.Run(where, func(t *testing.T) {
			bad := bytes.Clone(good)
			bad[i] ^= 0x02
			p := filepath.Join(t.TempDir(), "device.sealed")
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			refused(t, serveEnv(t, e, p, dev), 2, "device config "+p, "damaged")
		})
	}
	// Forged: the private area changed and the checksum made to match, as an attacker would.
	s, err := device.ParseSealed(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, area := range []string{"public", "private"} {
		t.Run("forged "+area, func(t *testing.T) {
			f := s
			o := f.Objects[0]
			if area == "public" {
				o.Public = bytes.Clone(o.Public)
				o.Public[len(o.Public)-3] ^= 0x10
			} else {
				o.Private = bytes.Clone(o.Private)
				o.Private[len(o.Private)/2] ^= 0x10
			}
			f.Objects = []device.Object{o}
			p := filepath.Join(t.TempDir(), "device.sealed")
			if err := os.WriteFile(p, f.Marshal(), 0o600); err != nil {
				t.Fatal(err)
			}
			refused(t, serveEnv(t, e, p, dev), 2, "device config "+p, "damaged", "TPM")
		})
	}
}

func TestSealedFilePermissions(t *testing.T) {
	dev := testenv.SWTPM(t)
	e := newTestEnv(t, envOptions{})
	path := sealFor(t, dev)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	refused(t, serveEnv(t, e, path, dev), 2, "mode 0644", "chmod 600 "+path)
}

// TestSealedTPMNotAnswering: the TPM is stopped (SIGSTOP) when the loader starts: it gives up
// after TPM_TIMEOUT with exit code 1, so the service manager starts it again.
func TestSealedTPMNotAnswering(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	a := testenv.NewSWTPM(t)
	path := sealFor(t, a.Device)
	a.Pause(t) // SIGCONT in the cleanup
	r := refused(t, serveEnv(t, e, path, a.Device, "TPM_TIMEOUT=2s"), 1,
		"device config "+path, "TPM not answering", "did not answer within 2s")
	if r.took < 2*time.Second {
		t.Errorf("exited after %v, before TPM_TIMEOUT", r.took)
	}
}

func TestSealedToPCR7(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	a := testenv.NewSWTPM(t)
	path := sealFor(t, a.Device, "--pcrs", "7")
	for i := 0; i < 2; i++ { // PCR 7 unchanged: it unseals, every time
		p := startProcess(t, serveEnv(t, e, path, a.Device)...)
		if !strings.Contains(p.stderr.String(), "device identity loaded") {
			t.Fatalf("start %d:\n%s", i+1, p.stderr.String())
		}
		p.kill(t)
	}
	a.ExtendPCR(t, 7)
	refused(t, serveEnv(t, e, path, a.Device), 2, "device config "+path, "PCRs it is bound to (sha256:7) changed", "device seal")
}

func TestDeviceInfo(t *testing.T) {
	dev := testenv.SWTPM(t)
	dir := t.TempDir()
	plain := filepath.Join(dir, "device.conf")
	if err := os.WriteFile(plain, []byte(deviceConf()), 0o600); err != nil {
		t.Fatal(err)
	}
	lax := filepath.Join(dir, "lax.conf")
	os.WriteFile(lax, []byte(deviceConf()), 0o600)
	os.Chmod(lax, 0o644)
	sealed := sealFor(t, dev)
	other := testenv.NewSWTPM(t)
	for name, c := range map[string]struct {
		conf, dev string
		want      []string
	}{
		"none":          {filepath.Join(dir, "absent.conf"), dev, []string{": none (no file"}},
		"plain":         {plain, dev, []string{": plain; permissions OK"}},
		"plain, lax":    {lax, dev, []string{": plain; the loader refuses it", "mode 0644", "chmod 600 " + lax}},
		"sealed":        {sealed, dev, []string{": sealed (storage key ecc-p256, PCRs none); permissions OK; sealed by this TPM"}},
		"sealed, other": {sealed, other.Device, []string{": sealed (", "sealed for another TPM"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := runBin(t, "", "", []string{"DEVICE_CONFIG=" + c.conf, "TPM_DEVICE=" + c.dev}, "device", "info")
			if r.code != 0 {
				t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			want := append([]string{`TPM ` + c.dev + `: answers; manufacturer "IBM"`, "firmware ", "DEVICE_CONFIG " + c.conf}, c.want...)
			for _, w := range want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("device info does not say %q:\n%s", w, r.stdout)
				}
			}
			noSecrets(t, []string{r.stdout, r.stderr}, testPassword, testEmail)
		})
	}
	t.Run("TPM stopped", func(t *testing.T) {
		other.Pause(t)
		r := runBin(t, "", "", []string{"DEVICE_CONFIG=" + sealed, "TPM_DEVICE=" + other.Device, "TPM_TIMEOUT=1s"}, "device", "info")
		for _, w := range []string{"does not answer", "within 1s", ": sealed (", "unknown (the TPM does not answer)"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("device info does not say %q:\n%s", w, r.stdout)
			}
		}
	})
}

func TestDeviceSealRefusals(t *testing.T) {
	dev := testenv.SWTPM(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "device.sealed")
	sealedAlready := sealFor(t, dev)
	for name, c := range map[string]struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		"bad config":     {"AZAION_DEVICE_EMAIL=" + testEmail + "\nAZAION_DEVICE_PASWORD=" + testPassword + "\n", nil, 2, "unknown key AZAION_DEVICE_PASWORD"},
		"bad PCRs":       {deviceConf(), []string{"--pcrs", "7,x"}, 2, "--pcrs"},
		"bad SRK":        {deviceConf(), []string{"--srk", "dsa"}, 2, "--srk"},
		"already sealed": {"", []string{"--in", sealedAlready}, 2, "already sealed"},
		"no TPM":         {deviceConf(), []string{"--tpm", "/nonexistent/tpmrm0"}, 1, "/nonexistent/tpmrm0"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"device", "seal", "--in", "-", "--out", out, "--tpm", dev}, c.args...)
			r := runBin(t, "", c.stdin, nil, args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, want %d saying %q:\n%s%s", r.code, c.code, c.want, r.stdout, r.stderr)
			}
			noSecrets(t, []string{r.stdout, r.stderr}, testPassword, testEmail)
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a refused seal left %s (%v)", out, err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("a refused seal left files: %v", ents)
			}
		})
	}
	r := runBin(t, "", "", nil, "device", "seal", "--out", out)
	if r.code != 2 || !strings.Contains(r.stderr, "--in and --out") {
		t.Fatalf("no --in: exit %d\n%s", r.code, r.stderr)
	}
}

func TestDeviceHelp(t *testing.T) {
	r := runBin(t, "", "", nil, "device", "seal", "--help")
	for _, w := range []string{"--pcrs", "firmware update", "--in", "standard input", "TPM_DEVICE", "TPM_TIMEOUT"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("device seal --help does not mention %q:\n%s", w, r.stdout)
		}
	}
	r = runBin(t, "", "", nil, "--help")
	if !strings.Contains(r.stdout, "device") {
		t.Errorf("--help does not list the device command:\n%s", r.stdout)
	}
	r = runBin(t, "", "", nil, "serve", "--help")
	for _, w := range []string{"TPM_DEVICE", `default "/dev/tpmrm0"`, "TPM_TIMEOUT"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("serve --help does not mention %q", w)
		}
	}
}

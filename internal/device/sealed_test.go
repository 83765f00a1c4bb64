package device

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// The fixtures were sealed by "azaion-loader device seal" on a simulator that no longer exists:
// they parse, and no TPM will ever unseal them.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseSealedFixtures(t *testing.T) {
	for name, want := range map[string]struct {
		srk     string
		pcrs    []int
		objects int
	}{
		"device.sealed":          {SRKECC, nil, 1},
		"device-pcr7-rsa.sealed": {SRKRSA, []int{7}, 2},
	} {
		data := fixture(t, name)
		if !LooksSealed(data) {
			t.Fatalf("%s: not recognised as sealed", name)
		}
		s, err := ParseSealed(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.SRK != want.srk || !reflect.DeepEqual(s.PCRs, want.pcrs) || len(s.Objects) != want.objects || len(s.SRKName) != 34 {
			t.Errorf("%s: got SRK %s, PCRs %v, %d objects, name %d bytes", name, s.SRK, s.PCRs, len(s.Objects), len(s.SRKName))
		}
		if !bytes.Equal(s.Marshal(), data) {
			t.Errorf("%s: Marshal does not give back the file", name)
		}
		for _, secret := range []string{"fixture-password", "fixture@fleet"} {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s holds %q", name, secret)
			}
		}
	}
}

// TestParseSealedDamaged changes each byte of a sealed file in turn: every change is caught
// (by the checksum, or by the framing when the checksum line itself changes) and reported as
// damaged, and the file is still told apart from a plain device config.
func TestParseSealedDamaged(t *testing.T) {
	data := fixture(t, "device.sealed")
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x20
		if bad[i] == '\n' || data[i] == '\n' {
			bad[i] = data[i] ^ 0x01
		}
		_, err := ParseSealed(bad)
		if !errors.Is(err, ErrSealedDamaged) {
			t.Fatalf("byte %d (%q) changed: got %v, want damaged", i, data[i], err)
		}
		if !LooksSealed(bad) {
			t.Fatalf("byte %d changed: no longer recognised as a sealed file", i)
		}
	}
	for name, bad := range map[string][]byte{
		"truncated":      data[:len(data)/2],
		"no last line":   data[:bytes.LastIndex(data[:len(data)-1], []byte("\n"))+1],
		"empty":          {},
		"header only":    []byte(SealedHeader + "\n"),
		"extra line":     append(bytes.Clone(data), "object: AAAA AAAA\n"...),
		"blank inserted": bytes.Replace(data, []byte("\nsrk:"), []byte("\n\nsrk:"), 1),
	} {
		if _, err := ParseSealed(bad); !errors.Is(err, ErrSealedDamaged) {
			t.Errorf("%s: got %v, want damaged", name, err)
		}
	}
}

func TestParseSealedNewerFormat(t *testing.T) {
	s, err := ParseSealed(fixture(t, "device.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	v2 := bytes.Replace(s.Marshal(), []byte(" v1\n"), []byte(" v2\n"), 1)
	v2 = resum(v2)
	_, err = ParseSealed(v2)
	if err == nil || errors.Is(err, ErrSealedDamaged) || !strings.Contains(err.Error(), "newer loader") {
		t.Fatalf("got %v", err)
	}
}

// resum replaces the checksum of a sealed file after an edit, as a forger would.
func resum(data []byte) []byte {
	body := data[:bytes.LastIndex(data, []byte("sha256: "))]
	return fmt.Appendf(bytes.Clone(body), "sha256: %x\n", sha256.Sum256(body))
}

func TestLooksSealedNotForPlainConfigs(t *testing.T) {
	for _, plain := range []string{
		validText(),
		"# AZAION device\nAZAION_DEVICE_EMAIL=a\nAZAION_DEVICE_PASSWORD=b\n",
		"AZAION_DEVICE_EMAIL=a\nAZAION_DEVICE_PASSWORD=object: x\n",
		"",
	} {
		if LooksSealed([]byte(plain)) {
			t.Errorf("%q taken for a sealed file", plain)
		}
	}
}

func TestParsePCRList(t *testing.T) {
	for in, want := range map[string][]int{"": nil, "none": nil, "7": {7}, "7,0, 2,7": {0, 2, 7}} {
		got, err := ParsePCRList(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"x", "-1", "32", "7,", "1.5"} {
		if _, err := ParsePCRList(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	for _, id := range []Identity{
		{Email: testEmail, Password: testPassword},
		{Email: "a", Password: ` lead and trail `},
		{Email: "a", Password: `back\slash "quote" 'single' # hash ; semi = eq`},
	} {
		got, err := Parse(id.Canonical())
		if err != nil || got != id {
			t.Errorf("%q: got %q, %v", id.Password, got.Password, err)
		}
	}
}

// fakeTPM is an Unsealer that answers what it is told to; the real TPM is exercised in
// internal/tpm and in the binary's tests.
type fakeTPM struct {
	plain []byte
	err   error
	got   Sealed
}

func (f *fakeTPM) Unseal(_ context.Context, s Sealed) ([]byte, error) {
	f.got = s
	if f.err != nil {
		return nil, f.err
	}
	return bytes.Clone(f.plain), nil
}

func writeSealed(t *testing.T, mode os.FileMode) string {
	t.Helper()
	return write(t, string(fixture(t, "device.sealed")), mode)
}

func TestLoadSealed(t *testing.T) {
	ctx := context.Background()
	p := writeSealed(t, 0o600)
	f := &fakeTPM{plain: []byte(validText())}
	id, err := Load(ctx, p, Options{Owner: -1, TPM: f})
	if err != nil || id.Email != testEmail {
		t.Fatalf("got %v", err)
	}
	if f.got.SRK != SRKECC || len(f.got.Objects) != 1 {
		t.Errorf("the unsealer got %+v", f.got)
	}
}

func TestLoadSealedRefusals(t *testing.T) {
	ctx := context.Background()
	p := writeSealed(t, 0o600)
	notAnswering := errors.New("TPM not answering: the TPM at unix:///x did not answer within 2s")
	for name, c := range map[string]struct {
		f        *fakeTPM
		opts     Options
		want     string
		exitTwo  bool // an *Error: the service refuses to start
		plainErr error
	}{
		"another TPM":   {f: &fakeTPM{err: fmt.Errorf("%w: x", ErrSealedForAnotherTPM)}, want: "sealed for another TPM", exitTwo: true},
		"damaged":       {f: &fakeTPM{err: fmt.Errorf("%w: the TPM's integrity check of the sealed object failed", ErrSealedDamaged)}, want: "it is damaged: the TPM's integrity check", exitTwo: true},
		"PCRs":          {f: &fakeTPM{err: fmt.Errorf("%w (PCRs sha256:7)", ErrPCRsChanged)}, want: "PCRs it is bound to", exitTwo: true},
		"not a config":  {f: &fakeTPM{plain: []byte("AZAION_DEVICE_EMAIL=x\n")}, want: "what it holds is not a device config: AZAION_DEVICE_PASSWORD is missing", exitTwo: true},
		"no TPM":        {f: nil, want: "no TPM is configured", exitTwo: true},
		"not answering": {f: &fakeTPM{err: notAnswering}, want: "did not answer within 2s", plainErr: notAnswering},
	} {
		t.Run(name, func(t *testing.T) {
			opts := Options{Owner: -1}
			if c.f != nil {
				opts.TPM = c.f
			}
			id, err := Load(ctx, p, opts)
			if id != nil || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, %v; want an error saying %q", id, err, c.want)
			}
			var de *Error
			if errors.As(err, &de) != c.exitTwo {
				t.Fatalf("%v: *Error is %v, want %v", err, !c.exitTwo, c.exitTwo)
			}
			fix := "azaion-loader device seal --in - --out " + p
			if name == "no TPM" {
				fix = "set TPM_DEVICE"
			}
			if c.exitTwo && (!strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), fix)) {
				t.Errorf("%q does not name the file and the fix", err)
			}
			if c.plainErr != nil && !errors.Is(err, c.plainErr) {
				t.Errorf("%v does not wrap the unsealer's error", err)
			}
		})
	}
}

// TestLoadSealedDamagedFileNeverReachesTheTPM: a damaged file is refused as damaged before the
// TPM is asked, even when its header is what was damaged.
func TestLoadSealedDamagedFileNeverReachesTheTPM(t *testing.T) {
	data := fixture(t, "device.sealed")
	for _, i := range []int{0, 5, len(SealedHeader) - 1, bytes.Index(data, []byte("object: ")) + 20, len(data) - 10} {
		bad := bytes.Clone(data)
		bad[i] ^= 0x04
		f := &fakeTPM{plain: []byte(validText())}
		_, err := Load(context.Background(), write(t, string(bad), 0o600), Options{Owner: -1, TPM: f})
		var de *Error
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("byte %d changed: got %v", i, err)
		}
		if f.got.SRK != "" {
			t.Errorf("byte %d changed: the TPM was asked", i)
		}
	}
}

func TestLoadSealedPermissions(t *testing.T) {
	p := writeSealed(t, 0o640)
	_, err := Load(context.Background(), p, Options{Owner: -1, TPM: &fakeTPM{plain: []byte(validText())}})
	var de *Error
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Fatalf("got %v", err)
	}
}

func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		path    string
		kind    Kind
		problem string
	}{
		"none":            {dir + "/absent", KindNone, ""},
		"empty path":      {"", KindNone, ""},
		"plain":           {write(t, validText(), 0o600), KindPlain, ""},
		"plain, lax":      {write(t, validText(), 0o644), KindPlain, "mode 0644"},
		"plain, bad key":  {write(t, "AZAION_DEVICE_EMAIL=x\nPASS=y\n", 0o600), KindPlain, "unknown key PASS"},
		"sealed":          {writeSealed(t, 0o600), KindSealed, ""},
		"sealed, lax":     {writeSealed(t, 0o604), KindSealed, "mode 0604"},
		"sealed, damaged": {write(t, strings.Replace(string(fixture(t, "device.sealed")), "srk: ecc", "srk: ecd", 1), 0o600), KindSealed, "damaged"},
	} {
		t.Run(name, func(t *testing.T) {
			d := Describe(c.path, Options{Owner: -1})
			if d.Kind != c.kind {
				t.Errorf("kind %s, want %s", d.Kind, c.kind)
			}
			switch {
			case c.problem == "" && d.Problem != nil:
				t.Errorf("problem %v, want none", d.Problem)
			case c.problem != "" && (d.Problem == nil || !strings.Contains(d.Problem.Error(), c.problem)):
				t.Errorf("problem %v, want one saying %q", d.Problem, c.problem)
			}
			if d.Problem != nil && (strings.Contains(d.Problem.Error(), testEmail) || strings.Contains(d.Problem.Error(), "s3cr3t")) {
				t.Errorf("a value in %v", d.Problem)
			}
			if c.kind == KindSealed && c.problem == "" && (d.Sealed == nil || d.Sealed.SRK != SRKECC) {
				t.Errorf("sealed fields %+v", d.Sealed)
			}
		})
	}
}

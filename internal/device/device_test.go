package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testEmail    = "drone-17@fleet.example"
	testPassword = "s3cr3t p@ss 'with' \"quotes\""
)

func TestParseAcceptsEnvironmentFileSyntax(t *testing.T) {
	cases := map[string]string{
		"plain":   "AZAION_DEVICE_EMAIL=a@b.c\nAZAION_DEVICE_PASSWORD=pw\n",
		"spaced":  "  AZAION_DEVICE_EMAIL = a@b.c  \r\n\tAZAION_DEVICE_PASSWORD=   pw\r\n",
		"comment": "# provisioned 2026-11-30\n; also a comment\n\nAZAION_DEVICE_EMAIL=a@b.c\n\nAZAION_DEVICE_PASSWORD=pw",
		"single":  "AZAION_DEVICE_EMAIL='a@b.c'\nAZAION_DEVICE_PASSWORD='pw'\n",
		"double":  "AZAION_DEVICE_EMAIL=\"a@b.c\"\nAZAION_DEVICE_PASSWORD=\"pw\"\n",
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := Parse([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if id.Email != "a@b.c" || id.Password != "pw" {
				t.Fatalf("got %q / %q", id.Email, id.Password)
			}
		})
	}
}

func TestParseQuotes(t *testing.T) {
	cases := []struct{ raw, want string }{
		{`'a "b" \c # d'`, `a "b" \c # d`},
		{`"a \"b\" \\c"`, `a "b" \c`},
		{`a#b`, `a#b`}, // '#' starts a comment only at the start of a line
		{`pa=ss`, `pa=ss`},
		{`' x '`, ` x `}, // quotes keep the spaces
	}
	for _, c := range cases {
		id, err := Parse([]byte("AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=" + c.raw + "\n"))
		if err != nil || id.Password != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.raw, id.Password, err, c.want)
		}
	}
}

func TestParseRefusesWithoutShowingValues(t *testing.T) {
	const secret = "Hunter2-is-my-password"
	cases := map[string]struct{ text, want string }{
		"missing password": {"AZAION_DEVICE_EMAIL=" + secret + "\n", "AZAION_DEVICE_PASSWORD is missing"},
		"missing email":    {"AZAION_DEVICE_PASSWORD=" + secret + "\n", "AZAION_DEVICE_EMAIL is missing"},
		"empty file":       {"", "AZAION_DEVICE_EMAIL and AZAION_DEVICE_PASSWORD are missing"},
		"empty password":   {"AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=\"\"\n", "AZAION_DEVICE_PASSWORD is missing or empty"},
		"unknown key":      {"AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=" + secret + "\nAZAION_DEVICE_PASSWROD=" + secret + "\n", "line 3: unknown key AZAION_DEVICE_PASSWROD"},
		"no equals":        {"AZAION_DEVICE_EMAIL=e\n" + secret + "\n", "line 2 is not KEY=VALUE"},
		"value as key":     {"AZAION_DEVICE_EMAIL=e\n" + secret + " x=1\n", "line 2: the key is not a variable name"},
		"twice":            {"AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=" + secret + "\nAZAION_DEVICE_PASSWORD=" + secret + "\n", "line 3: AZAION_DEVICE_PASSWORD is set again (first on line 2)"},
		"open quote":       {"AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=\"" + secret + "\n", "line 2: AZAION_DEVICE_PASSWORD has an unterminated quote"},
		"stray quote":      {"AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=\"" + secret + "\"\"\n", "unescaped double quote"},
		"not utf-8":        {"AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=\xff" + secret + "\n", "is not UTF-8"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "Hunter2") {
				t.Errorf("error shows the value: %q", err)
			}
		})
	}
}

// write writes a device config with the given mode and returns its path.
func write(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "device.conf")
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func validText() string {
	return fmt.Sprintf("AZAION_DEVICE_EMAIL=%s\nAZAION_DEVICE_PASSWORD='%s'\n", testEmail, strings.ReplaceAll(testPassword, "'", ""))
}

func TestLoad(t *testing.T) {
	ctx := context.Background()
	id, err := Load(ctx, write(t, validText(), 0o600), Options{Owner: -1})
	if err != nil {
		t.Fatal(err)
	}
	if id.Email != testEmail || id.Password != strings.ReplaceAll(testPassword, "'", "") {
		t.Fatalf("got %q", id.Email)
	}
	if id, err := Load(ctx, write(t, validText(), 0o400), Options{Owner: -1}); err != nil || id == nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadNoFileIsNoIdentity(t *testing.T) {
	for _, p := range []string{"", filepath.Join(t.TempDir(), "absent.conf")} {
		id, err := Load(context.Background(), p, Options{Owner: -1})
		if id != nil || err != nil {
			t.Errorf("%q: got %v, %v; want no identity and no error", p, id, err)
		}
	}
}

func TestLoadRefusesWhatOthersMayTouch(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o602, 0o660} {
		p := write(t, validText(), mode)
		_, err := Load(context.Background(), p, Options{Owner: -1})
		var de *Error
		if !errors.As(err, &de) {
			t.Fatalf("mode %04o: got %v, want *Error", mode, err)
		}
		msg := err.Error()
		for _, want := range []string{p, fmt.Sprintf("mode %04o", mode), "chmod 600 " + p} {
			if !strings.Contains(msg, want) {
				t.Errorf("mode %04o: %q does not say %q", mode, msg, want)
			}
		}
		if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, testEmail) {
			t.Errorf("error shows a credential: %q", msg)
		}
	}
}

func TestLoadRefusesAnotherOwner(t *testing.T) {
	p := write(t, validText(), 0o600)
	// The file belongs to this process's user; pretend the loader runs as another one. Root
	// owns files of every test run as root, which is accepted, so use a file we chown when we can.
	owner := os.Geteuid() + 1000
	if os.Geteuid() == 0 {
		if err := os.Chown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		owner = 0
	}
	_, err := Load(context.Background(), p, Options{Owner: owner})
	if os.Geteuid() == 0 {
		// root may own it, but 4242 may not when the loader is root
		var de *Error
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "belongs to user id 4242") || !strings.Contains(err.Error(), "chown 0 "+p) {
			t.Fatalf("got %v", err)
		}
		return
	}
	var de *Error
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "not to the loader's user") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadRefusesADirectory(t *testing.T) {
	d := t.TempDir()
	os.Chmod(d, 0o700)
	_, err := Load(context.Background(), d, Options{Owner: -1})
	var de *Error
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadBadContentIsAnError(t *testing.T) {
	p := write(t, "AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASWORD=x\n", 0o600)
	_, err := Load(context.Background(), p, Options{Owner: -1})
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "unknown key AZAION_DEVICE_PASWORD") {
		t.Errorf("got %q", err)
	}
}

func TestIdentityNeverPrintsItself(t *testing.T) {
	id := Identity{Email: testEmail, Password: testPassword}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "id", id, "ptr", &id)
	for _, s := range []string{
		fmt.Sprint(id), fmt.Sprintf("%v %+v %#v %s %q", id, id, id, id, id), fmt.Sprintf("%v", &id), logged.String(),
	} {
		if strings.Contains(s, "s3cr3t") || strings.Contains(s, "drone-17") {
			t.Errorf("identity printed: %s", s)
		}
	}
}

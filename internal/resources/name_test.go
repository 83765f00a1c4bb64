package resources_test

import (
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/azaion/loader/internal/resources"
)

// TestValidateName: what a name may be (SPEC §2), each refusal with the reason a user reads.
func TestValidateName(t *testing.T) {
	unescape := func(s string) string {
		u, err := url.PathUnescape(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		what, name, reason string
	}{
		{"filename", "", "is empty"},
		{"folder", "", "is empty"},
		{"filename", "a/b", "not a path"},
		{"filename", `a\b`, "not a path"},
		{"filename", "a\x00b", "not a path"},
		{"filename", "..", `"..`},
		{"filename", "a..b", `".."`},
		{"filename", ".hidden", "start with a dot"},
		{"filename", unescape("%ff%fe"), "not valid UTF-8"},
		{"filename", unescape("%c0%ae"), "not valid UTF-8"},     // an overlong "."
		{"filename", unescape("a%c0%afb"), "not valid UTF-8"},   // an overlong "/"
		{"filename", unescape("a%ed%a0%80"), "not valid UTF-8"}, // a surrogate
		{"filename", "model\r\n.onnx", "control characters (U+000D)"},
		{"filename", "model\n.onnx", "control characters (U+000A)"},
		{"filename", "model\t.onnx", "control characters (U+0009)"},
		{"filename", "model\x1b[31m", "control characters (U+001B)"},
		{"filename", "model\x7f", "control characters (U+007F)"},
		{"filename", "model\u0085", "control characters (U+0085)"},
		{"filename", "model\u009b", "control characters (U+009B)"},
		{"folder", "mod\rels", "control characters (U+000D)"},
		{"filename", "gpj.\u202eexe", "bidirectional formatting characters (U+202E)"},
		{"filename", "a\u202ab", "bidirectional formatting characters (U+202A)"},
		{"filename", "a\u2066b\u2069", "bidirectional formatting characters (U+2066)"},
		{"filename", "a\u2069", "bidirectional formatting characters (U+2069)"},
		{"filename", "a\u200eb", "bidirectional formatting characters (U+200E)"},
		{"filename", "a\u200fb", "bidirectional formatting characters (U+200F)"},
		{"folder", "a\u061cb", "bidirectional formatting characters (U+061C)"},
		// The file is stored upstream as NAME.small: 249 bytes is the most that fits 255.
		{"filename", strings.Repeat("a", 250), "longer than 249 bytes"},
		{"filename", strings.Repeat("é", 125), "longer than 249 bytes"}, // 250 bytes, 125 characters
		{"folder", strings.Repeat("a", 256), "longer than 255 bytes"},
	} {
		err := resources.ValidateName(tc.what, tc.name, false)
		if !errors.Is(err, resources.ErrInvalidName) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("ValidateName(%s, %q) = %v, want ErrInvalidName saying %q", tc.what, tc.name, err, tc.reason)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\r\n\u202e") {
			t.Errorf("the error for %q carries the control character itself: %q", tc.name, err)
		}
	}
	for _, tc := range []struct{ what, name string }{
		{"filename", "model.onnx"},
		{"filename", "my model v2.onnx"},
		{"filename", "модель-детектор.onnx"},
		{"filename", "نموذج.onnx"}, // right-to-left letters are fine; only the formatting characters are not
		{"filename", "模型_🚁.bin"},
		{"filename", strings.Repeat("a", 249)},
		{"folder", strings.Repeat("a", 255)},
		{"folder", "models"},
	} {
		if err := resources.ValidateName(tc.what, tc.name, false); err != nil {
			t.Errorf("ValidateName(%s, %q) = %v, want nil", tc.what, tc.name, err)
		}
	}
	if err := resources.ValidateName("folder", "", true); err != nil {
		t.Errorf("an empty folder where one is allowed: %v", err)
	}
}

// FuzzValidateName: whatever ValidateName accepts is a plain, printable name of the right
// length, so it is safe as a path element, an S3 key, a log field and a line of text.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"model.onnx", "..", "a/b", "\xff\xfe", "\xc0\xae", "a\r\nb", "gpj.\u202eexe",
		"модель.onnx", strings.Repeat("a", 249), strings.Repeat("a", 250), ".hidden", "a\x00b", "a\u2066b"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, name string, isFile bool) {
		what, limit := "folder", resources.MaxNameLen
		if isFile {
			what, limit = "filename", resources.MaxFileNameLen
		}
		err := resources.ValidateName(what, name, false)
		if err != nil {
			if !errors.Is(err, resources.ErrInvalidName) {
				t.Fatalf("error %v is not ErrInvalidName", err)
			}
			if !utf8.ValidString(err.Error()) || strings.ContainsAny(err.Error(), "\r\n\u202e") {
				t.Fatalf("the error text carries what it refuses: %q", err)
			}
			return
		}
		switch {
		case name == "" || len(name) > limit:
			t.Fatalf("accepted %d bytes", len(name))
		case !utf8.ValidString(name):
			t.Fatalf("accepted invalid UTF-8 %q", name)
		case strings.ContainsAny(name, "/\\") || strings.Contains(name, "..") || strings.HasPrefix(name, "."):
			t.Fatalf("accepted a path %q", name)
		case filepath.Base(name) != name || filepath.Clean(name) != name:
			t.Fatalf("accepted %q, which is not its own base name", name)
		}
		for _, r := range name {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("accepted %q with %U", name, r)
			}
		}
	})
}

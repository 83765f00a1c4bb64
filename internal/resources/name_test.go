package resources_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

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

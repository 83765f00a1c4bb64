// Package resources downloads and uploads model resources with the binary-split scheme of
// SPEC §5: a small encrypted head on the Resource API, the big remainder on the S3 CDN and in a
// local cache.
package resources

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidName: a file or folder name that is empty, path-like, too long or unsafe to show.
var ErrInvalidName = errors.New("invalid name")

// Resource is a decrypted resource being streamed: Size is the exact plaintext length, known
// before the first byte is read.
type Resource struct {
	Size int64
	io.ReadCloser
}

// MaxNameLen is the longest name accepted, in bytes.
const MaxNameLen = 255

// MaxFileNameLen is the longest file name accepted, in bytes: the file is stored upstream as
// NAME.small (SPEC §2), and that name must fit in MaxNameLen too.
const MaxFileNameLen = MaxNameLen - len(".small")

// ValidateName checks that name is a plain name, not a path, and safe to show and store: valid
// UTF-8, no separators, no "..", no leading dot, no control character (C0, DEL, C1: CR and LF
// would split a log line) and no bidirectional formatting character (U+202E makes "gpj.exe"
// read as "exe.jpg"), at most MaxNameLen bytes. what ("filename", "folder") goes into the
// error; a "filename" may have at most MaxFileNameLen bytes. An empty name is valid only where
// allowEmpty is true.
func ValidateName(what, name string, allowEmpty bool) error {
	limit := MaxNameLen
	if what == "filename" {
		limit = MaxFileNameLen
	}
	switch {
	case name == "":
		if allowEmpty {
			return nil
		}
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	case len(name) > limit:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidName, what, limit)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: %s must be a name, not a path", ErrInvalidName, what)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w: %s must not contain \"..\"", ErrInvalidName, what)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%w: %s must not start with a dot", ErrInvalidName, what)
	case !utf8.ValidString(name):
		// Go's decoder also refuses overlong forms such as C0 AE for ".".
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidName, what)
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r): // U+0000–U+001F, U+007F–U+009F
			return fmt.Errorf("%w: %s must not contain control characters (%U)", ErrInvalidName, what, r)
		case unicode.Is(unicode.Bidi_Control, r): // ALM, LRM, RLM, LRE…RLO, LRI…PDI
			return fmt.Errorf("%w: %s must not contain bidirectional formatting characters (%U)", ErrInvalidName, what, r)
		}
	}
	return nil
}

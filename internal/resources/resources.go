// Package resources downloads and uploads model resources with the binary-split scheme of
// SPEC §5: a small encrypted head on the Resource API, the big remainder on the S3 CDN and in a
// local cache.
package resources

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrInvalidName: a file or folder name that is empty, path-like or too long.
var ErrInvalidName = errors.New("invalid name")

// Resource is a decrypted resource being streamed: Size is the exact plaintext length, known
// before the first byte is read.
type Resource struct {
	Size int64
	io.ReadCloser
}

// MaxNameLen is the longest name accepted, in bytes.
const MaxNameLen = 255

// ValidateName checks that name is a plain name, not a path: no separators, no "..", no NUL,
// no leading dot, at most MaxNameLen bytes. what ("filename", "folder") goes into the error.
// An empty folder is valid only where allowEmpty is true.
func ValidateName(what, name string, allowEmpty bool) error {
	switch {
	case name == "":
		if allowEmpty {
			return nil
		}
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidName, what, MaxNameLen)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: %s must be a name, not a path", ErrInvalidName, what)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w: %s must not contain \"..\"", ErrInvalidName, what)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%w: %s must not start with a dot", ErrInvalidName, what)
	}
	return nil
}

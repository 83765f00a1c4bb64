// Package archive checks the Docker image archive that unlock loads (SPEC §13): the file
// IV ‖ AES-256-CBC(PKCS#7(tar)), the tar being what `docker save` writes. CBC has no MAC: a
// flipped byte decrypts to a garbled block that the padding check only sees in the last
// one. Verify is the integrity check it lacks: it decrypts the stream, walks the tar so that
// every byte is either covered by a digest or what a tar writer writes there (zeros), checks
// every file of the docker save layout against the digest the archive names for it, and
// says which problem it found. Nothing is written anywhere; memory stays bounded (the JSON
// files are kept, the layers only hashed) whatever the size of the archive.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/streams"
)

// The problems Verify tells apart; its errors wrap one of them, with the details.
var (
	// ErrWrongKey: the archive does not decrypt with the key (nothing in it makes sense).
	ErrWrongKey = errors.New("wrong key")
	// ErrTruncated: the archive, or the tar inside it, ends early.
	ErrTruncated = errors.New("archive truncated")
	// ErrCorrupt: the archive decrypts, but a part of it is not what it should be (a damaged
	// byte, or parts that disagree).
	ErrCorrupt = errors.New("archive corrupted")
	// ErrNotDockerSave: the archive decrypts to something that is not a docker save tar.
	ErrNotDockerSave = errors.New("not a docker save archive")
)

// Report is what a successful check found.
type Report struct {
	Images   []Image
	Layout   string // the docker save layout: "docker (1.10 to 24)" or "OCI (docker 25 and later)"
	Checked  int    // files checked against a digest
	TarBytes int64  // the size of the tar
}

// Image is one image of the archive.
type Image struct {
	RepoTags []string // "repo:tag" as manifest.json lists them; none for an untagged image
	Config   string   // the image ID, "sha256:<hex>"
	Layers   int
}

// Verify decrypts the archive read from r with key (security.ArchiveKey of the key fragment)
// and checks it. It returns an error wrapping ErrWrongKey, ErrTruncated, ErrCorrupt or
// ErrNotDockerSave, or a read error as it is (ctx's when it is done).
func Verify(ctx context.Context, r io.Reader, key []byte) (*Report, error) {
	var read atomic.Int64
	dec := security.NewDecrypter(streams.Count(streams.WithContext(ctx, r), &read), key)
	w, err := readTar(dec)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, classify(w, err, dec, read.Load())
	}
	return report(w)
}

func report(w *walk) (*Report, error) {
	rep, err := checkDockerSave(w)
	if err != nil {
		return nil, err
	}
	rep.TarBytes = w.pr.pos
	return rep, nil
}

// classify turns the first problem the walk met into the one to report. The decrypter's
// verdict on the padding (which needs the whole stream) tells a wrong key, whose every block
// is garbage, from a damaged byte, whose garbage is local, and a truncation from both.
func classify(w *walk, err error, dec io.Reader, read int64) error {
	padErr := err
	if !isDecryptError(err) {
		// The tar failed first: read on to learn whether the end of the archive is intact.
		_, padErr = io.Copy(io.Discard, dec)
	}
	switch {
	case errors.Is(padErr, security.ErrTruncated):
		return fmt.Errorf("%w: its %d bytes are not a 16-byte IV and whole 16-byte blocks", ErrTruncated, read)
	case errors.Is(padErr, security.ErrWrongKey):
		switch {
		case errors.Is(err, errNoTar) || len(w.order) == 0 && isDecryptError(err):
			return fmt.Errorf("%w: the archive does not decrypt with this key fragment (it decrypts to no tar header and a wrong padding)", ErrWrongKey)
		case !w.ended && (errors.Is(err, ErrTruncated) || isDecryptError(err)):
			return fmt.Errorf("%w: it ends inside the tar, after %d bytes of it (the padding of its last block is wrong)", ErrTruncated, w.pr.pos)
		case w.ended && isDecryptError(err):
			return fmt.Errorf("%w: its last block is damaged (its padding is wrong)", ErrCorrupt)
		default:
			return fmt.Errorf("%w; and the padding of its last block is wrong", err)
		}
	case padErr != nil:
		return padErr // a read error
	case errors.Is(err, errNoTar):
		// A right padding with a wrong key happens once in a few hundred keys: say both.
		return fmt.Errorf("%w or %w: it decrypts to data that does not start with a tar header", ErrWrongKey, ErrNotDockerSave)
	}
	return err
}

// isDecryptError reports whether err is the decrypter's verdict on the ciphertext.
func isDecryptError(err error) bool {
	return errors.Is(err, security.ErrWrongKey) || errors.Is(err, security.ErrTruncated)
}

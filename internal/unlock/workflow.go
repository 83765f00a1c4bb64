package unlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/streams"
)

// precheck answers whether every image is loaded, or else whether the archive exists
// (ErrArchiveNotFound when it does not).
func (u *Unlocker) precheck(ctx context.Context) (ready bool, err error) {
	missing, err := u.missingImages(ctx)
	if err != nil {
		return false, err
	}
	if len(missing) == 0 {
		return true, nil
	}
	if _, err := os.Stat(u.cfg.ArchivePath); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("%w: %s", ErrArchiveNotFound, u.cfg.ArchivePath)
		}
		return false, fmt.Errorf("encrypted archive %s: %w", u.cfg.ArchivePath, err)
	}
	return false, nil
}

// work is the workflow from logging in to the check after the load. The caller has set
// StateAuthenticating. With no credentials the Upstream's session is used as it is.
func (u *Unlocker) work(ctx context.Context, creds *credentials) error {
	if creds != nil {
		if err := u.up.Login(ctx, creds.email, creds.password); err != nil {
			return fmt.Errorf("log in to the Resource API: %w", err)
		}
	}

	u.setState(StateDownloadingKey)
	fragment, err := u.up.KeyFragment(ctx)
	if err != nil {
		return fmt.Errorf("fetch the archive key fragment: %w", err)
	}
	key := security.ArchiveKey(fragment)
	clear(fragment)
	defer clear(key)

	u.setState(StateDecrypting)
	if err := u.load(ctx, key); err != nil {
		return err
	}

	u.advance(StateDecrypting, StateLoadingImages)
	missing, err := u.missingImages(ctx)
	if err != nil {
		return err
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("image %s %w", missing[0], ErrImagesMissing)
	default:
		return fmt.Errorf("images %s %w", strings.Join(missing, ", "), ErrImagesMissing)
	}
}

// load streams the decrypted archive into Docker. It checks the key on the last block first, so a
// wrong key sends nothing to Docker.
func (u *Unlocker) load(ctx context.Context, key []byte) error {
	path := u.cfg.ArchivePath
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrArchiveNotFound, path)
		}
		return fmt.Errorf("open the encrypted archive: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open the encrypted archive: %w", err)
	}
	size := fi.Size()
	u.bytesTotal.Store(size)

	if _, err := security.PlaintextSize(f, size, key); err != nil {
		return archiveError(path, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	counted := streams.AtEOF(streams.Count(f, &u.bytesDone), func() { u.advance(StateDecrypting, StateLoadingImages) })
	plain := streams.RecordErr(u.newDecrypter(counted, key))
	loadErr := u.img.LoadImages(ctx, plain)
	// A broken archive is the reason, whatever Docker made of the cut-off stream.
	if plain.Err() != nil {
		return archiveError(path, plain.Err())
	}
	if loadErr != nil {
		return dockerError("load the images into Docker", loadErr)
	}
	// Docker may stop reading at the end of the tar: decrypt the rest too, so that the padding
	// is checked and the progress reaches the total.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return archiveError(path, err)
	}
	return nil
}

// missingImages returns the image:tag references Docker does not hold.
func (u *Unlocker) missingImages(ctx context.Context) ([]string, error) {
	var missing []string
	for _, ref := range u.refs {
		ok, err := u.img.ImageExists(ctx, ref)
		if err != nil {
			return nil, dockerError("check image "+ref, err)
		}
		if !ok {
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

// dockerError says what a failed Docker call means for the person who runs the device: a
// daemon that does not answer is named as it is, one that cannot be reached may not run.
func dockerError(op string, err error) error {
	switch {
	case errors.Is(err, docker.ErrNotAnswering), errors.Is(err, docker.ErrRejected):
		return err
	case errors.Is(err, docker.ErrUnreachable):
		return fmt.Errorf("%w; is dockerd running?", err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// archiveError says what a failure to decrypt the archive means for the person who deployed it.
func archiveError(path string, err error) error {
	switch {
	case errors.Is(err, security.ErrWrongKey):
		return fmt.Errorf("the key fragment does not decrypt the archive %s (wrong key or corrupted archive): %w", path, err)
	case errors.Is(err, security.ErrTruncated):
		return fmt.Errorf("archive %s truncated: %w", path, err)
	default:
		return fmt.Errorf("read the encrypted archive %s: %w", path, err)
	}
}

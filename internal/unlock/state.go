package unlock

import "errors"

// State is the unlock workflow's state, as it appears on the wire (SPEC §6).
type State string

const (
	StateIdle           State = "idle"
	StateAuthenticating State = "authenticating"
	StateDownloadingKey State = "downloading_key"
	StateDecrypting     State = "decrypting"
	StateLoadingImages  State = "loading_images"
	StateReady          State = "ready"
	StateError          State = "error"
)

// Status is a snapshot of the workflow for GET /unlock/status.
type Status struct {
	State      State
	Error      string // empty unless State is StateError
	BytesDone  int64  // archive bytes decrypted so far
	BytesTotal int64  // archive size; 0 before decrypting starts
}

// ErrArchiveNotFound: the encrypted archive is missing and the images are not loaded.
// httpapi answers it with 404 {"detail":"Encrypted archive not found"}.
var ErrArchiveNotFound = errors.New("encrypted archive not found")

// setState moves the workflow to s.
func (u *Unlocker) setState(s State) {
	u.mu.Lock()
	u.state = s
	u.mu.Unlock()
	u.log.Info("unlock: state", "state", s)
}

// advance moves from one state to the next only if the workflow is still in the first.
func (u *Unlocker) advance(from, to State) {
	u.mu.Lock()
	ok := u.state == from
	if ok {
		u.state = to
	}
	u.mu.Unlock()
	if ok {
		u.log.Info("unlock: state", "state", to)
	}
}

package resources

import "errors"

// ErrInconsistent: the CDN's big part belongs to another small part than the Resource API
// serves (x-amz-meta-small-sha256 differs): an upload is under way or failed halfway. Serving
// the mix would decrypt to garbage with valid padding, so the answer is an error (502).
var ErrInconsistent = errors.New("resource is being replaced or inconsistent")

// errClosed: the service is shutting down.
var errClosed = errors.New("the model service is shutting down")

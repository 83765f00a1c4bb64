package cdn

import "errors"

// Errors a caller tells apart; httpapi maps each to a status code.
var (
	ErrNotFound    = errors.New("object not found on the CDN")
	ErrDenied      = errors.New("CDN refused the credentials")
	ErrUnavailable = errors.New("CDN unreachable or broken")
)

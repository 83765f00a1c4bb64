package resourceapi

import "errors"

// Errors a caller tells apart; httpapi maps each to a status code.
var (
	ErrNotLoggedIn  = errors.New("not logged in")
	ErrUnauthorized = errors.New("resource API rejected the credentials")
	ErrForbidden    = errors.New("resource API refused the request")
	ErrNotFound     = errors.New("resource not found on the resource API")
	ErrUnavailable  = errors.New("resource API unreachable or broken")
)

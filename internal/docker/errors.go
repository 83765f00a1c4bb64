package docker

import "errors"

var (
	// ErrUnreachable: the Docker daemon did not answer at DOCKER_HOST.
	ErrUnreachable = errors.New("docker daemon unreachable")
	// ErrNotAnswering: the daemon took the connection but did not answer within the Engine's
	// timeout (a hung daemon, or one stopped with SIGSTOP). Errors matching it match
	// ErrUnreachable too.
	ErrNotAnswering = errors.New("docker daemon not answering")
	// ErrRejected: the daemon refused the image archive (not a valid image tar, or it could not
	// store it).
	ErrRejected = errors.New("docker rejected the image archive")
)

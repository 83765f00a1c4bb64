package docker

import "errors"

// ErrUnreachable: the Docker daemon did not answer at DOCKER_HOST.
var ErrUnreachable = errors.New("docker daemon unreachable")

// Package docker loads image archives into a Docker daemon and checks which images it holds,
// through the Docker Engine API (github.com/moby/moby/client), never the docker CLI.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Engine is a client of one Docker daemon. It negotiates the Engine API version with the daemon
// on first use (Debian's dockerd 20.10 speaks 1.41). It is safe for concurrent use.
type Engine struct {
	cli  *client.Client
	host string
}

// New returns an Engine for the daemon at host, e.g. "unix:///var/run/docker.sock". An empty
// host means DOCKER_HOST from the environment, or the platform default when that is unset.
// New does not connect; use Ping to find out whether the daemon answers.
func New(host string) (*Engine, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	return &Engine{cli: cli, host: cli.DaemonHost()}, nil
}

// Host is the daemon address the Engine talks to.
func (e *Engine) Host() string { return e.host }

// Close releases the Engine's idle connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Ping checks that the daemon answers. A daemon that cannot be reached gives an error wrapping
// ErrUnreachable that names the host.
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return e.wrap("ping docker", err)
	}
	return nil
}

// ImageExists reports whether the daemon holds the image ref ("repo:tag"). An image the daemon
// does not know is false with a nil error; a daemon that cannot be reached is ErrUnreachable.
func (e *Engine) ImageExists(ctx context.Context, ref string) (bool, error) {
	_, err := e.cli.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, e.wrap("inspect image "+ref, err)
	}
}

// LoadImages streams the image archive r (the tar "docker save" writes) into the daemon and
// waits until the daemon has finished loading it.
//
// The daemon answers 200 OK before it has read the archive and reports a bad archive inside the
// JSON message stream that follows, so LoadImages reads that stream to its end and turns an error
// in it into an error. When reading r fails, the load is aborted and that error is returned
// (wrapped), not what the daemon made of the cut-off archive. A daemon that cannot be reached, or
// that drops the connection, gives an error wrapping ErrUnreachable.
//
// LoadImages does not read r after it returns. (The HTTP transport may still be inside a call to
// r.Read when the daemon has answered; LoadImages waits for that call to return, so r must not
// block forever.)
func (e *Engine) LoadImages(ctx context.Context, r io.Reader) (err error) {
	src := &guardedReader{r: r}
	defer func() {
		if srcErr := src.close(); srcErr != nil {
			err = fmt.Errorf("read image archive: %w", srcErr)
		}
	}()

	res, err := e.cli.ImageLoad(ctx, src, client.ImageLoadWithQuiet(true))
	if err != nil {
		return e.wrap("load images", err)
	}
	defer res.Close()

	rejected, err := readMessages(res)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("load images: %w", ctxErr)
		}
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &syntaxErr) || errors.As(err, &typeErr) {
			return fmt.Errorf("load images: unreadable answer from docker: %v", err)
		}
		return fmt.Errorf("%w at %s: connection lost while loading images: %v", ErrUnreachable, e.host, err)
	}
	if rejected != "" {
		return fmt.Errorf("docker rejected the image archive: %s", rejected)
	}
	return nil
}

// ReadMessages reads r, the JSON message stream the daemon answers an image load or import with,
// to its end. It returns the error the daemon reported in the stream as "docker: ...", or the
// error reading or decoding the stream.
func ReadMessages(r io.Reader) error {
	rejected, err := readMessages(r)
	if err != nil {
		return err
	}
	if rejected != "" {
		return fmt.Errorf("docker: %s", rejected)
	}
	return nil
}

// readMessages decodes the JSON message stream r until its end or the first error the daemon
// reports in it, and returns that error's text. err is an error reading or decoding r.
func readMessages(r io.Reader) (rejected string, err error) {
	dec := json.NewDecoder(r)
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			return "", nil
		} else if err != nil {
			return "", err
		}
		if msg := m.errorText(); msg != "" {
			return msg, nil
		}
	}
}

// wrap turns a failed connection into ErrUnreachable naming the host, and prefixes anything else
// with what was being done.
func (e *Engine) wrap(op string, err error) error {
	if !client.IsErrConnectionFailed(err) {
		return fmt.Errorf("%s: %w", op, err)
	}
	// The client's own text repeats the host and guesses at causes; the dial error says it all.
	cause := err.Error()
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		cause = opErr.Error()
	}
	return fmt.Errorf("%w at %s: %s", ErrUnreachable, e.host, cause)
}

// message is one entry of the JSON message stream of /images/load (and of an image import). The
// fields of the daemon's jsonstream.Message that matter here: older daemons put a bare "error"
// next to "errorDetail".
type message struct {
	Stream      string `json:"stream"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Error string `json:"error"`
}

func (m *message) errorText() string {
	if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
		return m.ErrorDetail.Message
	}
	return m.Error
}

// errLoadFinished is what the HTTP transport reads once LoadImages has returned.
var errLoadFinished = errors.New("image load finished")

// guardedReader hands r to the HTTP transport for the duration of one LoadImages call only, and
// remembers the first error r returned.
type guardedReader struct {
	mu     sync.Mutex
	r      io.Reader
	err    error // first error from r other than io.EOF
	closed bool
}

func (g *guardedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errLoadFinished
	}
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && g.err == nil {
		g.err = err
	}
	return n, err
}

// close waits for a Read in progress, makes later ones fail, and returns the error r gave.
func (g *guardedReader) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return g.err
}

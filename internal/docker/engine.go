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
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/azaion/loader/internal/streams"
)

// DefaultTimeout bounds each call to the daemon, and the time an image load may go without
// progress, unless New is given WithTimeout (SPEC §10: DOCKER_TIMEOUT).
const DefaultTimeout = 60 * time.Second

// Engine is a client of one Docker daemon. It negotiates the Engine API version with the daemon
// on first use (Debian's dockerd 20.10 speaks 1.41). It is safe for concurrent use.
//
// No call waits on the daemon for ever: a daemon that accepts connections but does not answer
// (hung, or stopped with SIGSTOP) fails each call after the timeout with an error matching
// ErrNotAnswering (and ErrUnreachable), "docker daemon HOST not answering within 60s".
type Engine struct {
	cli     *client.Client
	host    string
	timeout time.Duration
}

// Option configures an Engine.
type Option func(*Engine)

// WithTimeout sets the limit on each call and on the time an image load may go without
// progress; a value that is not positive keeps DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(e *Engine) {
		if d > 0 {
			e.timeout = d
		}
	}
}

// New returns an Engine for the daemon at host, e.g. "unix:///var/run/docker.sock". An empty
// host means DOCKER_HOST from the environment, or the platform default when that is unset.
// New does not connect; use Ping to find out whether the daemon answers.
func New(host string, opts ...Option) (*Engine, error) {
	copts := []client.Opt{client.FromEnv}
	if host != "" {
		copts = append(copts, client.WithHost(host))
	}
	cli, err := client.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	e := &Engine{cli: cli, host: cli.DaemonHost(), timeout: DefaultTimeout}
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// Timeout is the limit on each call (see WithTimeout).
func (e *Engine) Timeout() time.Duration { return e.timeout }

// Host is the daemon address the Engine talks to.
func (e *Engine) Host() string { return e.host }

// Close releases the Engine's idle connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Ping checks that the daemon answers. A daemon that cannot be reached gives an error wrapping
// ErrUnreachable that names the host.
func (e *Engine) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, e.timeout, errNoAnswer)
	defer cancel()
	if _, err := e.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return e.wrap(ctx, "ping", err)
	}
	return nil
}

// ImageExists reports whether the daemon holds the image ref ("repo:tag"). An image the daemon
// does not know is false with a nil error; a daemon that cannot be reached is ErrUnreachable.
func (e *Engine) ImageExists(ctx context.Context, ref string) (bool, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, e.timeout, errNoAnswer)
	defer cancel()
	_, err := e.cli.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, e.wrap(ctx, "inspect image "+ref, err)
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
// A load of a big archive takes minutes, so it has no overall deadline: it fails when the
// daemon makes no progress for the Engine's timeout, that is when it neither reads a byte of r
// nor sends a message (the daemon reports its progress per layer; LoadImages asks for it for
// that reason, and ignores it otherwise).
//
// LoadImages does not read r after it returns. (The HTTP transport may still be inside a call to
// r.Read when the daemon has answered; LoadImages waits for that call to return, so r must not
// block forever.)
func (e *Engine) LoadImages(ctx context.Context, r io.Reader) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wd := streams.NewWatchdog(e.timeout, func() { cancel(errNoAnswer) })
	defer wd.Stop()
	// The HTTP transport gets r for the duration of this call only (src is detached on the way
	// out); every read that returned bytes (the daemon took them) is progress, and the first
	// error r gave is the one to return.
	rec := streams.RecordErr(streams.OnRead(r, wd.Progress))
	src := streams.NewDetachable(rec)
	defer func() {
		src.Detach()
		if srcErr := rec.Err(); srcErr != nil {
			err = fmt.Errorf("read image archive: %w", srcErr)
		}
	}()

	res, err := e.cli.ImageLoad(ctx, src, client.ImageLoadWithQuiet(false))
	if err != nil {
		return e.wrap(ctx, "load images", err)
	}
	defer res.Close()

	rejected, err := readMessages(streams.OnRead(res, wd.Progress))
	if err != nil {
		if context.Cause(ctx) == errNoAnswer {
			return e.notAnswering("load images")
		}
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
		return fmt.Errorf("%w: %s", ErrRejected, rejected)
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

// wrap turns a call that ran out of time into ErrNotAnswering and a failed connection into
// ErrUnreachable, both naming the host, and prefixes anything else with what was being done.
// ctx is the call's context, made with errNoAnswer as the cause of its deadline.
func (e *Engine) wrap(ctx context.Context, op string, err error) error {
	if context.Cause(ctx) == errNoAnswer {
		return e.notAnswering(op)
	}
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

// errNoAnswer is the cause of a context the Engine's timeout ended.
var errNoAnswer = errors.New("no answer within the timeout")

// notAnswering is the error of a call the daemon did not answer in time.
func (e *Engine) notAnswering(op string) error {
	return &notAnsweringError{host: e.host, timeout: e.timeout, op: op}
}

// notAnsweringError says which daemon did not answer, and within how long.
type notAnsweringError struct {
	host    string
	timeout time.Duration
	op      string
}

func (e *notAnsweringError) Error() string {
	return fmt.Sprintf("docker daemon %s not answering within %s (%s)", e.host, seconds(e.timeout), e.op)
}

func (e *notAnsweringError) Is(target error) bool {
	return target == ErrNotAnswering || target == ErrUnreachable
}

// seconds writes whole seconds as "60s" rather than Duration's "1m0s".
func seconds(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

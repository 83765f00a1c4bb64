package cdn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"
)

// Errors a caller tells apart; httpapi maps each to a status code.
var (
	ErrNotFound    = errors.New("object not found on the CDN")
	ErrDenied      = errors.New("CDN refused the credentials")
	ErrUnavailable = errors.New("CDN unreachable or broken")

	// ErrChanged reports that the object was replaced while it was being downloaded, so the
	// bytes already written belong to another version. It is also an ErrUnavailable; a caller
	// that wrote to a temporary file may start that download again from the beginning.
	ErrChanged = fmt.Errorf("%w: the object changed during the download", ErrUnavailable)
)

// errStalled is the cause given to an attempt's context when no byte arrived for StallTimeout.
var errStalled = errors.New("no data received within the stall timeout")

// kind sorts err into one of the sentinel errors, nil when it is none of them, and tells
// whether repeating the request may help.
func kind(err error) (sentinel error, retry bool) {
	if errors.Is(err, errStalled) {
		return ErrUnavailable, true
	}
	if errors.Is(err, ErrChanged) {
		return ErrChanged, false
	}
	if errors.Is(err, errBadAnswer) {
		return ErrUnavailable, false
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "NoSuchKey", "NoSuchBucket", "NoSuchVersion":
			return ErrNotFound, false
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
			"ExpiredToken", "RequestTimeTooSkewed", "AllAccessDisabled":
			return ErrDenied, false
		case "PreconditionFailed":
			return ErrChanged, false
		case "RequestTimeout", "SlowDown", "SlowDownRead", "SlowDownWrite", "InternalError",
			"ServiceUnavailable", "Throttling", "RequestError", "XMinioServerNotInitialized":
			return ErrUnavailable, true
		}
		switch s := resp.StatusCode; {
		case s == http.StatusNotFound:
			return ErrNotFound, false
		case s == http.StatusUnauthorized || s == http.StatusForbidden:
			return ErrDenied, false
		case s == http.StatusPreconditionFailed:
			return ErrChanged, false
		case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
			return ErrUnavailable, true
		}
		// Any other answer of the server, or a request minio-go refused to send (an invalid
		// bucket or object name): asking again would not help.
		return nil, false
	}
	// A certificate the client does not trust, or plain HTTP spoken to a TLS port, does not
	// get better by asking again; it is still "unreachable" for the caller.
	var (
		unknownAuthority x509.UnknownAuthorityError
		invalidCert      x509.CertificateInvalidError
		hostname         x509.HostnameError
		recordHeader     tls.RecordHeaderError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &invalidCert) ||
		errors.As(err, &hostname) || errors.As(err, &recordHeader) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return ErrUnavailable, false
	}
	// Everything else is the network: refused, reset, timed out, cut short.
	return ErrUnavailable, true
}

// opError is what every method of Client returns: the operation, the object, the sentinel the
// caller branches on and the cause, with the credentials blanked out of the text.
type opError struct {
	msg      string
	sentinel error // nil when the failure is none of the sentinels
	cause    error
}

func (e *opError) Error() string { return e.msg }

func (e *opError) Unwrap() []error {
	if e.sentinel == nil {
		return []error{e.cause}
	}
	return []error{e.sentinel, e.cause}
}

// fail wraps err for op on bucket/object. A cancelled or expired ctx is reported as such, not
// as a CDN failure. sentinel overrides the classification when not nil; detail is extra text
// placed before the cause.
func (c *Client) fail(ctx context.Context, op, bucket, object string, sentinel error, detail string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if cause := context.Cause(ctx); cause != ctxErr {
			return fmt.Errorf("%s %s/%s: %w: %w", op, bucket, object, ctxErr, cause)
		}
		return fmt.Errorf("%s %s/%s: %w", op, bucket, object, ctxErr)
	}
	if sentinel == nil {
		sentinel, _ = kind(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s/%s: ", op, bucket, object)
	if sentinel != nil {
		b.WriteString(sentinel.Error())
		b.WriteString(": ")
	}
	if detail != "" {
		b.WriteString(detail)
		b.WriteString(": ")
	}
	b.WriteString(err.Error())
	return &opError{msg: c.redact(b.String()), sentinel: sentinel, cause: err}
}

// redact blanks the credentials out of s. Nothing minio-go returns is known to carry them;
// this makes sure of it.
func (c *Client) redact(s string) string {
	for _, secret := range []string{c.secretKey, c.accessKey} {
		if len(secret) >= 3 {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
	}
	return s
}

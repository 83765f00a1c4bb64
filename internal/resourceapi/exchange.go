package resourceapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/azaion/loader/internal/streams"
)

// Limits on answer bodies, so a broken or hostile server cannot make the loader buffer
// without end; a larger answer is ErrUnavailable. Model heads are a few KiB and key
// fragments smaller still.
const (
	MaxResourceSize    = 64 << 20 // a resource from POST /resources/get
	MaxKeyFragmentSize = 1 << 20  // the key fragment
)

const (
	maxListSize    = 8 << 20 // the JSON list of names
	maxSmallAnswer = 1 << 20 // login and upload answers
	errorBodyLimit = 4 << 10 // what is read of a failed answer, to find its reason
	maxDetailLen   = 200     // runes of that reason quoted in an error
)

// request is one call to the API.
type request struct {
	op     string // names the call in errors, e.g. "get models/a.small"
	method string
	path   string
	// body returns the request body; it is called for every attempt because a body can be
	// read only once. nil: no body.
	body  func(s *session) (r io.Reader, contentType string, length int64, err error)
	limit int64 // longest 2xx answer accepted
}

// answer is what the API sent back: the whole body of a 2xx answer, the start of any other.
type answer struct {
	status      int
	contentType string
	body        []byte
	retryAfter  time.Duration // from a Retry-After header of a 429 or 503 answer
	hasRetry    bool
}

// endpointOf names the API endpoint of a request for metrics, without its variable parts.
func endpointOf(method, path string) string {
	switch {
	case path == "/login":
		return "login"
	case strings.HasPrefix(path, "/resources/get"):
		return "resources/get"
	case strings.HasPrefix(path, "/resources/list"):
		return "resources/list"
	case strings.HasPrefix(path, "/binary-split/key-fragment"):
		return "key-fragment"
	case method == http.MethodPost && strings.HasPrefix(path, "/resources/"):
		return "resources/upload"
	}
	return "other"
}

// exchange sends r once with s's token. The error is for when no answer came (ErrUnavailable,
// also wrapping ctx.Err() if ctx ended) or r's body could not be built; any status is an answer.
func (c *Client) exchange(ctx context.Context, s *session, r *request) (answer, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var body io.Reader
	var contentType string
	var length int64
	if r.body != nil {
		b, ct, n, err := r.body(s)
		if err != nil {
			return answer{}, err
		}
		d := streams.NewDetachable(b)
		// The transport may still be reading the body after Do returns (a server that answers
		// 401 before reading it all); the caller's reader must be untouched once we return.
		defer d.Detach()
		body, contentType, length = d, ct, n
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, body)
	if err != nil {
		return answer{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if body != nil {
		req.ContentLength = length
		req.Header.Set("Content-Type", contentType)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error repeats method and URL; the cause alone reads better after our context.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		c.obs.UpstreamCall(endpointOf(r.method, r.path), "unreachable")
		return answer{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	outcome := "ok"
	if resp.StatusCode/100 != 2 {
		outcome = strconv.Itoa(resp.StatusCode)
	}
	c.obs.UpstreamCall(endpointOf(r.method, r.path), outcome)

	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		a.retryAfter, a.hasRetry = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
	}
	ok := resp.StatusCode/100 == 2
	limit := r.limit
	if !ok {
		limit = errorBodyLimit
	}
	a.body, err = c.readBody(resp, limit, cancel)
	c.log.Debug("resource API call", "method", r.method, "path", r.path, "status", resp.StatusCode,
		"duration", time.Since(start))
	switch {
	case !ok:
		// A failed answer is judged by its status; its body only adds a reason, if it has one.
		a.body = a.body[:min(len(a.body), errorBodyLimit)]
		return a, nil
	case err != nil:
		return answer{}, err
	case int64(len(a.body)) > limit:
		return answer{}, fmt.Errorf("%w: the answer is larger than %d bytes", ErrUnavailable, limit)
	}
	return a, nil
}

// readBody reads up to limit+1 bytes of resp's body. A pause of more than headerTimeout between
// bytes cancels the request: a stalled connection fails instead of hanging the caller.
func (c *Client) readBody(resp *http.Response, limit int64, cancel context.CancelFunc) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: the answer of %d bytes is larger than %d bytes", ErrUnavailable, resp.ContentLength, limit)
	}
	wd := streams.NewWatchdog(c.headerTimeout, cancel)
	defer wd.Stop()
	// Whenever bytes arrive, the pause starts again.
	data, err := io.ReadAll(streams.OnRead(io.LimitReader(resp.Body, limit+1), wd.Progress))
	switch {
	case wd.Fired():
		return data, fmt.Errorf("%w: the answer stalled for %s", ErrUnavailable, c.headerTimeout)
	case err != nil:
		return data, fmt.Errorf("%w: reading the answer: %w", ErrUnavailable, err)
	}
	return data, nil
}

// err turns a failed answer into sentinel wrapped with the status and, if the API gave one, its
// reason (with every secret blanked out, in case the server echoed the request). An answer that
// asked to be retried later becomes a *RetryAfterError.
func (a answer) err(sentinel error, secrets []string) error {
	status := fmt.Sprintf("%d %s", a.status, http.StatusText(a.status))
	var err error
	if d := detail(a.contentType, a.body, secrets); d != "" {
		err = fmt.Errorf("%w (%s: %s)", sentinel, status, d)
	} else {
		err = fmt.Errorf("%w (%s)", sentinel, status)
	}
	if a.hasRetry {
		return &RetryAfterError{After: a.retryAfter, err: err}
	}
	return err
}

// RetryAfterError is an answer of the API that asked the caller to come back later: a 429 Too
// Many Requests (or a 503) with a Retry-After header. It wraps the call's error (ErrUnavailable).
type RetryAfterError struct {
	After time.Duration // how long the API asked to wait; 0 for a date already past
	err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v; the API asks to retry after %s", e.err, e.After)
}

func (e *RetryAfterError) Unwrap() error { return e.err }

// maxRetryAfter bounds what a Retry-After header can make anyone wait: a value past it is a
// broken header, not a plan.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): delay-seconds or an HTTP date,
// counted from now. ok is false for an absent or unreadable header.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
				return maxRetryAfter, true
			}
			return 0, false
		}
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// detail extracts a short human reason from a failed answer: a plain-text body, or the
// detail/message/title/error field of a JSON one (ASP.NET ProblemDetails and the like). Other
// bodies (HTML pages of a proxy, say) are left out: they are long, and escaping would hide
// a secret from the redaction.
func detail(contentType string, body []byte, secrets []string) string {
	mediaType, _, _ := mime.ParseMediaType(contentType)
	var text string
	switch {
	case mediaType == "text/plain":
		text = string(body)
	case mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"):
		var fields map[string]any
		if json.Unmarshal(body, &fields) != nil {
			return ""
		}
	find:
		for _, want := range []string{"detail", "message", "title", "error"} {
			for name, v := range fields {
				if s, ok := v.(string); ok && s != "" && strings.EqualFold(name, want) {
					text = s
					break find
				}
			}
		}
	}
	// Longest first, so a secret that contains another is blanked whole.
	secrets = slices.Clone(secrets)
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, "[redacted]")
		}
	}
	text = strings.Join(strings.FieldsFunc(strings.ToValidUTF8(text, ""), func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	if utf8.RuneCountInString(text) > maxDetailLen {
		text = string([]rune(text)[:maxDetailLen]) + "…"
	}
	return text
}

// jsonBody encodes v as a request body.
func jsonBody(v any) (io.Reader, string, int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, "", 0, err
	}
	return bytes.NewReader(b), "application/json", int64(len(b)), nil
}

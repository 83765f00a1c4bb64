// Package cdn is the client of the S3-compatible CDN that holds the big parts of the model
// resources (SPEC §5).
//
// Downloads stream into an io.Writer and survive the links of edge devices: a connection that
// breaks, or that delivers no byte for Options.StallTimeout, is resumed with a ranged request
// from the last byte written, a bounded number of times, and never restarted from zero. A
// ranged request carries the ETag of the first answer (If-Match), so a download never splices
// two versions of an object together.
//
// Every error names the operation and the object, wraps one of ErrNotFound, ErrDenied or
// ErrUnavailable when it is one of them, and never carries the access key or the secret.
package cdn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Defaults of Options.
const (
	DefaultStallTimeout  = 30 * time.Second
	DefaultStallMinBytes = 1 << 10
	DefaultMaxResumes    = 5
	DefaultBackoff       = 500 * time.Millisecond
	DefaultRegion        = "us-east-1"

	// maxBackoff caps the doubling backoff between resumes (unless Options.Backoff is larger).
	maxBackoff = 30 * time.Second

	// partSize is the multipart part size of uploads: each part streams from the
	// io.ReaderAt, nothing is buffered. 16 MiB × 10000 parts allows objects of 156 GiB; a
	// larger object gets larger parts.
	partSize = 16 << 20
	maxParts = 10000

	// copyBufferSize is the buffer a download copies through.
	copyBufferSize = 32 << 10
)

// Config is where the CDN is and who we are to it: the "host" and one key pair of cdn.yaml.
type Config struct {
	// Endpoint is the cdn.yaml "host": "https://cdn.example.com", "http://127.0.0.1:9000" or a
	// bare "host:port", which means https. The scheme decides TLS.
	Endpoint  string
	AccessKey string
	SecretKey string
	// Region signs the requests; empty means DefaultRegion. Setting it spares a
	// bucket-location request before the first request to each bucket.
	Region string
}

// Options tune the client; the zero value is ready to use.
type Options struct {
	// Transport carries the HTTP requests; nil means minio-go's default transport with its
	// connect and answer-header timeouts set to StallTimeout. Tests wrap it to count and inspect
	// the requests.
	Transport http.RoundTripper
	// StallTimeout abandons a download attempt that delivers fewer than StallMinBytes in this
	// long, and resumes it. Zero means DefaultStallTimeout.
	StallTimeout time.Duration
	// StallMinBytes is how much a download must deliver per StallTimeout not to count as
	// stalled, so a connection that trickles a byte now and then cannot hold a download (and
	// every request waiting on it) for ever. Zero means DefaultStallMinBytes.
	StallMinBytes int64
	// MaxResumes bounds the repeated requests of one call after a broken or stalled
	// connection, a refused connection or a 5xx answer. Zero means DefaultMaxResumes, a
	// negative value no repetition at all. It also bounds minio-go's own retries of the
	// requests of Upload and Stat.
	MaxResumes int
	// Backoff is the first pause before a resume; it doubles while attempts make no progress,
	// up to 30 s. Zero means DefaultBackoff.
	Backoff time.Duration
	// Logger receives a warning per resume; nil discards.
	Logger *slog.Logger
}

// Client talks to one CDN endpoint with one key pair. It is safe for concurrent use.
type Client struct {
	get *minio.Core   // GETs of Download: no retries of its own, Download resumes instead
	mc  *minio.Client // everything else: minio-go's retries, bounded by MaxResumes

	accessKey, secretKey string // only to blank them out of error texts
	endpoint             string // scheme://host, for logs

	stall      time.Duration
	stallMin   int64
	maxResumes int
	backoff    time.Duration
	log        *slog.Logger

	buckets sync.Map // bucket names known to exist, so Upload checks each only once
}

// New returns a client of the CDN at cfg.Endpoint. It sends no request: a wrong endpoint or
// wrong keys show on the first call.
func New(cfg Config, opts Options) (*Client, error) {
	host, secure, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	c := &Client{
		accessKey:  cfg.AccessKey,
		secretKey:  cfg.SecretKey,
		stall:      opts.StallTimeout,
		stallMin:   opts.StallMinBytes,
		maxResumes: opts.MaxResumes,
		backoff:    opts.Backoff,
		log:        opts.Logger,
	}
	if secure {
		c.endpoint = "https://" + host
	} else {
		c.endpoint = "http://" + host
	}
	if c.stall <= 0 {
		c.stall = DefaultStallTimeout
	}
	if c.stallMin <= 0 {
		c.stallMin = DefaultStallMinBytes
	}
	switch {
	case c.maxResumes == 0:
		c.maxResumes = DefaultMaxResumes
	case c.maxResumes < 0:
		c.maxResumes = 0
	}
	if c.backoff <= 0 {
		c.backoff = DefaultBackoff
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	region := cfg.Region
	if region == "" {
		region = DefaultRegion
	}
	transport := opts.Transport
	if transport == nil {
		// One transport for both minio clients, so they share the connection pool.
		t, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, fmt.Errorf("cdn: transport: %w", err)
		}
		// minio-go waits a minute for a connection and for an answer's header, and repeats a
		// Stat or an Upload's requests MaxRetries times: a hung CDN would hold a /load for
		// minutes. A CDN that is silent for the stall timeout is hung, before a download too.
		t.DialContext = (&net.Dialer{Timeout: c.stall, KeepAlive: 30 * time.Second}).DialContext
		t.ResponseHeaderTimeout = c.stall
		transport = t
	}
	mopts := func(retries int) *minio.Options {
		return &minio.Options{
			Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
			Secure:       secure,
			Transport:    transport,
			Region:       region,
			BucketLookup: minio.BucketLookupPath,
			MaxRetries:   retries,
		}
	}
	get, err := minio.NewCore(host, mopts(1))
	if err != nil {
		return nil, fmt.Errorf("cdn: endpoint %q: %s", c.endpoint, c.redact(err.Error()))
	}
	mc, err := minio.New(host, mopts(1+c.maxResumes))
	if err != nil {
		return nil, fmt.Errorf("cdn: endpoint %q: %s", c.endpoint, c.redact(err.Error()))
	}
	c.get, c.mc = get, mc
	return c, nil
}

// parseEndpoint splits a cdn.yaml host into host[:port] and whether it speaks TLS.
func parseEndpoint(endpoint string) (host string, secure bool, err error) {
	endpoint = strings.TrimSpace(endpoint)
	if endpoint == "" {
		return "", false, errors.New("cdn: empty endpoint")
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		// url.Error quotes the whole input, which may hold credentials: say less.
		return "", false, errors.New("cdn: endpoint is not a URL or host:port")
	}
	switch {
	case u.User != nil:
		return "", false, errors.New("cdn: endpoint must not carry credentials")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("cdn: endpoint %q: scheme must be http or https", endpoint)
	case u.Host == "" || u.Hostname() == "":
		return "", false, fmt.Errorf("cdn: endpoint %q: no host", endpoint)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return "", false, fmt.Errorf("cdn: endpoint %q: must be scheme://host[:port] without a path", endpoint)
	}
	return u.Host, u.Scheme == "https", nil
}

// Endpoint returns the scheme and host the client talks to, for logs and messages.
func (c *Client) Endpoint() string { return c.endpoint }

// Object is what the CDN says about an object before its bytes are read.
type Object struct {
	Size int64
	ETag string
	// SmallSHA256 is the object's x-amz-meta-small-sha256 (MetaSmallSHA256): the lowercase hex
	// SHA-256 of the small part the big part belongs to (SPEC §5); empty when the object was
	// stored without it (by other tools).
	SmallSHA256 string
}

// MetaSmallSHA256 is the user-metadata key (x-amz-meta-small-sha256) recording which small
// part an uploaded big part belongs to.
const MetaSmallSHA256 = "small-sha256"

// Stat returns the size, ETag and metadata of bucket/object.
func (c *Client) Stat(ctx context.Context, bucket, object string) (Object, error) {
	info, err := c.mc.StatObject(ctx, bucket, object, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, c.fail(ctx, "stat", bucket, object, nil, "", err)
	}
	return objectOf(info), nil
}

func objectOf(info minio.ObjectInfo) Object {
	return Object{Size: info.Size, ETag: info.ETag, SmallSHA256: info.Metadata.Get("X-Amz-Meta-" + MetaSmallSHA256)}
}

// ensureBucket creates bucket unless it exists. When the credentials may not look the bucket
// up, it assumes it exists and lets the upload itself tell.
func (c *Client) ensureBucket(ctx context.Context, bucket string) error {
	if _, ok := c.buckets.Load(bucket); ok {
		return nil
	}
	exists, err := c.mc.BucketExists(ctx, bucket)
	if err != nil {
		if k, _ := kind(err); k == ErrDenied {
			return nil
		}
		return err
	}
	if !exists {
		err := c.mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{})
		if err != nil {
			code := minio.ToErrorResponse(err).Code
			if code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
				return err
			}
		} else {
			c.log.InfoContext(ctx, "cdn bucket created", "endpoint", c.endpoint, "bucket", bucket)
		}
	}
	c.buckets.Store(bucket, struct{}{})
	return nil
}

package cdn

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in     string
		host   string
		secure bool
		bad    bool
	}{
		{in: "https://cdn.example.com", host: "cdn.example.com", secure: true},
		{in: "https://cdn.example.com/", host: "cdn.example.com", secure: true},
		{in: "http://127.0.0.1:9000", host: "127.0.0.1:9000"},
		{in: "HTTP://127.0.0.1:9000", host: "127.0.0.1:9000"},
		{in: "cdn.example.com:9000", host: "cdn.example.com:9000", secure: true},
		{in: " cdn.example.com ", host: "cdn.example.com", secure: true},
		{in: "", bad: true},
		{in: "ftp://cdn.example.com", bad: true},
		{in: "https://", bad: true},
		{in: "https://cdn.example.com/bucket", bad: true},
		{in: "https://cdn.example.com/?x=1", bad: true},
		{in: "https://user:hunter22@cdn.example.com", bad: true},
	} {
		host, secure, err := parseEndpoint(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseEndpoint(%q) = %q, %v; want an error", tc.in, host, secure)
			} else if strings.Contains(err.Error(), "hunter22") {
				t.Errorf("parseEndpoint(%q): error %q shows the password", tc.in, err)
			}
			continue
		}
		if err != nil || host != tc.host || secure != tc.secure {
			t.Errorf("parseEndpoint(%q) = %q, %v, %v; want %q, %v", tc.in, host, secure, err, tc.host, tc.secure)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-0/1", 0, 1, true},
		{"bytes */200", 0, 0, false},
		{"bytes 100-199/*", 0, 0, false},
		{"", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
	} {
		start, total, ok := parseContentRange(tc.in)
		if start != tc.start || total != tc.total || ok != tc.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", tc.in, start, total, ok, tc.start, tc.total, tc.ok)
		}
	}
}

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		err      error
		sentinel error
		retry    bool
	}{
		{minio.ErrorResponse{Code: "NoSuchKey", StatusCode: 404}, ErrNotFound, false},
		{minio.ErrorResponse{Code: "NoSuchBucket", StatusCode: 404}, ErrNotFound, false},
		{fmt.Errorf("x: %w", minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}), ErrDenied, false},
		{minio.ErrorResponse{Code: "InvalidAccessKeyId", StatusCode: 403}, ErrDenied, false},
		{minio.ErrorResponse{Code: "SignatureDoesNotMatch", StatusCode: 403}, ErrDenied, false},
		{minio.ErrorResponse{Code: "RequestTimeTooSkewed", StatusCode: 403}, ErrDenied, false},
		{minio.ErrorResponse{Code: "PreconditionFailed", StatusCode: 412}, ErrChanged, false},
		{minio.ErrorResponse{Code: "InternalError", StatusCode: 500}, ErrUnavailable, true},
		{minio.ErrorResponse{Code: "Whatever", StatusCode: http.StatusBadGateway}, ErrUnavailable, true},
		{minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}, ErrUnavailable, true},
		{minio.ErrorResponse{Code: "InvalidRange", StatusCode: 416}, nil, false},
		{minio.ErrorResponse{Code: minio.InvalidBucketName}, nil, false},
		{errStalled, ErrUnavailable, true},
		{fmt.Errorf("%w: short", errBadAnswer), ErrUnavailable, false},
		{errors.New("read tcp: connection reset by peer"), ErrUnavailable, true},
		{errors.New("http: server gave HTTP response to HTTPS client"), ErrUnavailable, false},
	} {
		sentinel, retry := kind(tc.err)
		if sentinel != tc.sentinel || retry != tc.retry {
			t.Errorf("kind(%v) = %v, %v; want %v, %v", tc.err, sentinel, retry, tc.sentinel, tc.retry)
		}
	}
}

func TestErrorsHideCredentials(t *testing.T) {
	c, err := New(Config{Endpoint: "http://127.0.0.1:1", AccessKey: "AKIDEXAMPLE", SecretKey: "s3cr3t-s3cr3t"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cause := errors.New("signed with AKIDEXAMPLE and s3cr3t-s3cr3t")
	err = c.fail(ctx, "download", "b", "o", nil, "", cause)
	if strings.Contains(err.Error(), "AKIDEXAMPLE") || strings.Contains(err.Error(), "s3cr3t-s3cr3t") {
		t.Errorf("error text %q shows a credential", err)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, cause) {
		t.Errorf("error %v does not wrap ErrUnavailable and its cause", err)
	}
	if !strings.HasPrefix(err.Error(), "download b/o: ") {
		t.Errorf("error %q does not name the operation and object", err)
	}
}

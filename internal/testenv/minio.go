package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Client is an S3 client of m with its root credentials, bypassing the loader: tests place and
// inspect objects with it as another party would, and make and remove buckets.
func (m MinIOServer) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var nonBucketChars = regexp.MustCompile(`[^a-z0-9-]+`)

// Bucket is a fresh bucket name for t: prefix, the test's name and a random suffix (lowercase,
// 3–63 characters, a valid folder name of the loader too). Whoever makes the bucket, it is
// removed with its objects when t ends.
func (m MinIOServer) Bucket(t testing.TB, prefix string) string {
	t.Helper()
	name := strings.Trim(nonBucketChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	bucket := strings.Trim(prefix+"-"+name, "-") + "-" + hex.EncodeToString(suffix[:])
	t.Cleanup(func() { m.removeBucket(t, bucket) })
	return bucket
}

// removeBucket removes bucket and its objects, if it exists.
func (m MinIOServer) removeBucket(t testing.TB, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := m.Client(t)
	if ok, err := mc.BucketExists(ctx, bucket); err != nil || !ok {
		return
	}
	for obj := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err == nil {
			mc.RemoveObject(ctx, bucket, obj.Key, minio.RemoveObjectOptions{})
		}
	}
	if err := mc.RemoveBucket(ctx, bucket); err != nil {
		t.Logf("remove bucket %s: %v", bucket, err)
	}
}

// PutObject stores data as bucket/object, making the bucket when it does not exist.
func (m MinIOServer) PutObject(t testing.TB, bucket, object string, data []byte) {
	t.Helper()
	ctx := context.Background()
	c := m.Client(t)
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		if code := minio.ToErrorResponse(err).Code; code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
			t.Fatal(err)
		}
	}
	if _, err := c.PutObject(ctx, bucket, object, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

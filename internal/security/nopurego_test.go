//go:build !purego

package security

// testPurego: this test binary was built without the purego tag.
const testPurego = false

//go:build purego

package security

// testPurego: this test binary was built with the purego tag, so no assembly may be used.
const testPurego = true

package unlock

import "io"

// SetDecrypter replaces security.NewDecrypter in u, so tests can cut the plaintext stream.
func SetDecrypter(u *Unlocker, f func(r io.Reader, key []byte) io.Reader) { u.newDecrypter = f }

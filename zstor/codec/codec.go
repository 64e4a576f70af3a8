// Package codec holds the data transformations of the 0-stor v2 pipeline,
// byte-compatible with the official zstor: BLAKE2b-128 checksums, the snappy
// framing format, AES-256-GCM with the nonce prefixed and the tag appended,
// PKCS#7-style padding and Reed-Solomon (GF(2^8), the Backblaze/klauspost
// matrix that reed-solomon-erasure also uses).
//
// It owns only pure functions over byte slices. Where the data goes
// (backends, metadata) is owned by the other zstor packages.
package codec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/blake2b"
)

// ChecksumSize is the length of file and shard checksums (BLAKE2b-128).
const ChecksumSize = 16

// Checksum is a BLAKE2b-128 digest.
type Checksum [ChecksumSize]byte

// Sum returns the BLAKE2b-128 checksum of data (the same value as
// `b2sum -l 128`).
func Sum(data []byte) Checksum {
	h := NewHash()
	h.Write(data)
	var c Checksum
	h.Sum(c[:0])
	return c
}

// NewHash returns a streaming BLAKE2b-128 hash.
func NewHash() interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
} {
	h, err := blake2b.New(ChecksumSize, nil)
	if err != nil {
		panic(err) // 16 is a valid size without key
	}
	return h
}

// Encryption layout sizes.
const (
	NonceSize = 12
	TagSize   = 16
	KeySize   = 32
)

// ErrDecrypt is returned when authentication of encrypted data fails.
var ErrDecrypt = errors.New("decrypt: authentication failed (wrong key or corrupt data)")

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("aes key has %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes key: %w", err)
	}
	return cipher.NewGCM(block)
}

// Encrypt returns nonce ‖ ciphertext ‖ tag for plain under key, with a
// random 12-byte nonce.
func Encrypt(key, plain []byte) ([]byte, error) {
	buf := make([]byte, NonceSize+len(plain), NonceSize+len(plain)+TagSize)
	copy(buf[NonceSize:], plain)
	return EncryptInPlace(key, buf)
}

// EncryptInPlace encrypts buf[NonceSize:] in place: it fills buf[:NonceSize]
// with a random nonce and appends the tag, so give buf spare capacity of
// TagSize (plus any padding the caller appends later) to avoid a copy.
func EncryptInPlace(key, buf []byte) ([]byte, error) {
	if len(buf) < NonceSize {
		return nil, fmt.Errorf("encrypt: buffer of %d bytes has no room for the nonce", len(buf))
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := buf[:NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("encrypt: nonce: %w", err)
	}
	out := aead.Seal(buf[NonceSize:NonceSize], nonce, buf[NonceSize:], nil)
	return buf[:NonceSize+len(out)], nil
}

// Decrypt opens nonce ‖ ciphertext ‖ tag. The plaintext overwrites data.
func Decrypt(key, data []byte) ([]byte, error) {
	if len(data) < NonceSize+TagSize {
		return nil, fmt.Errorf("decrypt: %d bytes is shorter than nonce and tag", len(data))
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(data[NonceSize:NonceSize], data[:NonceSize], data[NonceSize:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

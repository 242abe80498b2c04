// Package jwttest makes tokens for tests: signing keys, valid claims, and
// the broken tokens an attacker would try.
package jwttest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The claims every valid token carries besides sub.
const (
	Issuer   = "https://idp.test"
	Audience = "chatd-test"
	Cookie   = "chatd_token"
)

// Keys are a test's signing keys: an HS256 secret and an RSA key pair
// whose public half is also in a PEM file.
type Keys struct {
	Secret  []byte
	RSA     *rsa.PrivateKey
	PubPEM  []byte
	PubFile string
}

// NewKeys makes a test's keys.
func NewKeys(t testing.TB) *Keys {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k := &Keys{Secret: []byte(strings.Repeat("0123456789abcdef", 3)), RSA: priv}
	k.PubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	k.PubFile = filepath.Join(t.TempDir(), "jwt.pem")
	if err := os.WriteFile(k.PubFile, k.PubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// Claims are a valid token's claims for user, changed by mods.
func Claims(user string, mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"sub": user, "iss": Issuer, "aud": Audience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for _, m := range mods {
		m(c)
	}
	return c
}

// Sign signs claims with method and key.
func Sign(t testing.TB, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// HS is a valid HS256 token for user.
func (k *Keys) HS(t testing.TB, user string, mods ...func(jwt.MapClaims)) string {
	return Sign(t, jwt.SigningMethodHS256, k.Secret, Claims(user, mods...))
}

// RS is a valid RS256 token for user.
func (k *Keys) RS(t testing.TB, user string, mods ...func(jwt.MapClaims)) string {
	return Sign(t, jwt.SigningMethodRS256, k.RSA, Claims(user, mods...))
}

// Tamper changes one character in the middle of a token's signature.
func Tamper(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 10
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// SwapClaims puts the claims of one token under the signature of another.
func SwapClaims(signed, claimsFrom string) string {
	s := strings.Split(signed, ".")
	c := strings.Split(claimsFrom, ".")
	return s[0] + "." + c[1] + "." + s[2]
}

package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/coder/websocket"
)

// TestHTTPS: with --tls-cert and --tls-key the WebSocket is wss://, SockJS
// and the page https://; a client that trusts the CA gets in, one that
// does not fails the handshake; a new pair written over the files is what
// new handshakes see, without a restart.
func TestHTTPS(t *testing.T) {
	ca := certtest.NewCA(t, "chatd-test")
	first, second := ca.Issue("first"), ca.Issue("second")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first.CopyTo(t, certFile, keyFile)
	n := startNode(t, func(c *config.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })

	trusting := httpsClient(ca.Pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// STOMP over wss://.
	ws, _, err := websocket.Dial(ctx, "wss://"+n.app.Addr()+n.cfg.WSPath, &websocket.DialOptions{HTTPClient: trusting, Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		t.Fatalf("wss:// dial with the CA trusted: %v", err)
	}
	defer func() { _ = ws.CloseNow() }()
	if err := ws.Write(ctx, websocket.MessageText, []byte("CONNECT\naccept-version:1.2\nhost:chat\nlogin:alice\n\n\x00")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || !strings.HasPrefix(string(msg), "CONNECTED\n") {
		t.Fatalf("over wss://: %q, %v; want CONNECTED", msg, err)
	}

	// SockJS and the rest of --http over https://.
	for _, path := range []string{n.cfg.WSPath + "/info", "/healthz", "/"} {
		resp, err := trusting.Get("https://" + n.app.Addr() + path)
		if err != nil {
			t.Fatalf("GET https://...%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET https://...%s: %s", path, resp.Status)
		}
		if path == n.cfg.WSPath+"/info" {
			var info struct{ Websocket bool }
			if err := json.Unmarshal(body, &info); err != nil || !info.Websocket {
				t.Fatalf("SockJS info over https: %s, %v", body, err)
			}
		}
	}

	// A client that does not trust the CA fails the handshake.
	_, _, err = websocket.Dial(ctx, "wss://"+n.app.Addr()+n.cfg.WSPath, &websocket.DialOptions{HTTPClient: httpsClient(certtest.NewCA(t, "other").Pool)})
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Fatalf("wss:// dial without the CA: %v, want an unknown authority", err)
	}
	// Nor is plain HTTP served on the port.
	if resp, err := http.Get("http://" + n.app.Addr() + "/healthz"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain http:// served on a TLS port")
		}
	}

	if got := serialSeen(t, n.app.Addr(), ca); got != first.Cert.SerialNumber.String() {
		t.Fatalf("serial %s, want the first certificate's %s", got, first.Cert.SerialNumber)
	}
	// Renewed on disk: new handshakes see the new certificate.
	second.CopyTo(t, certFile, keyFile)
	wait.Until(t, "the renewed certificate in new handshakes", func() error {
		if got := serialSeen(t, n.app.Addr(), ca); got != second.Cert.SerialNumber.String() {
			return fmt.Errorf("serial %s, want the second certificate's %s", got, second.Cert.SerialNumber)
		}
		return nil
	})
	if _, _, err := websocket.Dial(ctx, "wss://"+n.app.Addr()+n.cfg.WSPath, &websocket.DialOptions{HTTPClient: trusting}); err != nil {
		t.Fatalf("wss:// dial after the renewal: %v", err)
	}
}

func httpsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// serialSeen is the serial of the certificate a new handshake shows.
func serialSeen(t *testing.T, addr string, ca *certtest.CA) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer func() { _ = c.Close() }()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

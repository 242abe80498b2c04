// Package web is chatd's chat page: plain HTML, CSS and JavaScript embedded
// in the binary and served at /. The page speaks STOMP over the node's own
// /ws with @stomp/stompjs 7.5.0 (Apache-2.0), vendored unchanged in
// static/vendor/stompjs with its LICENSE and a NOTICE, so nothing is
// fetched from elsewhere at run time.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the page and its assets.
func Handler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // "static" is embedded above: this cannot happen
	}
	fileServer := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Only this origin's own scripts, styles and WebSocket; no framing.
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; "+
			"base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files have no modification time: revalidate, so a new
		// release is picked up at once.
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}

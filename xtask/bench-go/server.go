package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
)

// serve answers every request from a goroutine started for it, through a channel: the shape of
// servers that fan a request out to workers, and the one that makes goroutine tracing costly.
func serve(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fail(err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"pid": os.Getpid(), "addr": ln.Addr().String()})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer := make(chan []byte, 1)
		go func(path string) {
			answer <- strconv.AppendInt([]byte("hello "+path+" "), int64(len(path)), 10)
		}(r.URL.Path)
		w.Write(<-answer)
	})
	fail(http.Serve(ln, handler))
}

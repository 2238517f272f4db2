// The Go net/http peer of scripts/bench's serving part: answers every request on a Unix socket with the same fixed
// bytes as the nginx peer, on Go's standard HTTP/1.1 server (the stack of Vault Agent's listener and tbot). Run
// with GOMAXPROCS=1, pinned to the server core like the others.
//
//	gopeer SOCKET BODY_FILE
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gopeer SOCKET BODY_FILE")
		os.Exit(2)
	}
	body, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Remove(os.Args[1])
	listener, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	length := strconv.Itoa(len(body))
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		header := w.Header()
		header["Content-Type"] = []string{"application/json"}
		header["Content-Length"] = []string{length}
		w.Write(body)
	})
	fmt.Println("listening")
	if err := http.Serve(listener, handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Command ferretdb runs FerretDB (the embeddable github.com/FerretDB/FerretDB/ferretdb
// package, SQLite handler) for the integration tests of `failover`.
//
// Usage:
//
//	ferretdb -listen 127.0.0.1:0 -data DIR [-remove-data-on-exit] [-verbose]
//
// It listens on the given loopback TCP address (port 0: any free port), stores its
// data in DIR (which must exist; with -remove-data-on-exit it is deleted when the
// server exits), prints exactly one line `PORT <n>` on stdout once
// it accepts connections, and serves until its stdin reaches EOF or SIGTERM/SIGINT
// arrives, so that it dies with the test process that started it (as
// tests/support/mongo_server.py does). Logs go to stderr: errors only, or
// everything with -verbose.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback TCP address to listen on (port 0: any free port)")
	data := flag.String("data", "", "existing directory for the SQLite databases (required)")
	removeData := flag.Bool("remove-data-on-exit", false, "delete the -data directory when the server exits")
	verbose := flag.Bool("verbose", false, "log every message at debug level to stderr")
	flag.Parse()

	if err := run(*listen, *data, *removeData, *verbose); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %s\n", err)
		os.Exit(1)
	}
}

func run(listen, data string, removeData, verbose bool) error {
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q; usage: ferretdb -listen 127.0.0.1:0 -data DIR [-remove-data-on-exit] [-verbose]", flag.Args())
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w (write host:port, e.g. 127.0.0.1:0)", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: the host must be a loopback IP address such as 127.0.0.1", listen)
	}
	if data == "" {
		return fmt.Errorf("-data is required: an existing directory for the SQLite databases")
	}
	dir, err := filepath.Abs(data)
	if err != nil {
		return fmt.Errorf("-data %q: %w", data, err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("-data %q: not an existing directory", data)
	}

	if removeData {
		defer os.RemoveAll(dir)
	}

	level := slog.LevelError
	if verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// The SQLite handler wants a `file:` URI of a directory, ending with a slash.
	sqliteURL := (&url.URL{Scheme: "file", Path: dir + "/"}).String()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Stop when stdin reaches EOF (or fails): the parent has exited.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	// MongoDBURI waits until the TCP listener is bound.
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		cancel()
		<-done
		return fmt.Errorf("cannot parse FerretDB's own URI: %w", err)
	}
	fmt.Printf("PORT %s\n", u.Port())

	return <-done
}

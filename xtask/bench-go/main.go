// benchload: the workloads and the fixed-rate load generator of `cargo xtask bench`.
//
//	benchload server [-trace FILE]    net/http server: every request hands its work to a new
//	                                  goroutine and waits for the answer on a channel
//	benchload pingpong [-trace FILE]  two goroutines bounce a token over two unbuffered channels
//	benchload churn [-trace FILE]     goroutines started and finished in batches of 64
//	benchload load -url U -rate R -duration D [-conns C]
//	                                  open-loop HTTP load at a fixed rate
//
// The workloads print {"pid":P,"addr":"host:port"} (addr: server only) once ready. pingpong and
// churn then read lines "run DURATION" from stdin and answer each with {"ops":N,"ns":T}.
// -trace FILE runs Go's runtime/trace into FILE for the process's whole life: the bench's
// baseline for "what tracing costs".
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/trace"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchload server|pingpong|churn|load [flags]")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "server":
		flags := flag.NewFlagSet(cmd, flag.ExitOnError)
		traceFile := flags.String("trace", "", "write a runtime/trace to this file")
		addr := flags.String("addr", "127.0.0.1:0", "listen address")
		flags.Parse(args)
		defer startTrace(*traceFile)()
		serve(*addr)
	case "pingpong", "churn":
		flags := flag.NewFlagSet(cmd, flag.ExitOnError)
		traceFile := flags.String("trace", "", "write a runtime/trace to this file")
		flags.Parse(args)
		defer startTrace(*traceFile)()
		work := pingpong
		if cmd == "churn" {
			work = churn
		}
		runOnRequest(work)
	case "load":
		flags := flag.NewFlagSet(cmd, flag.ExitOnError)
		url := flags.String("url", "", "URL to GET")
		rate := flags.Float64("rate", 1000, "requests a second")
		duration := flags.Duration("duration", 5*time.Second, "how long")
		conns := flags.Int("conns", 32, "connections (and concurrent requests at most)")
		flags.Parse(args)
		load(*url, *rate, *duration, *conns)
	default:
		fmt.Fprintf(os.Stderr, "unknown workload %q\n", cmd)
		os.Exit(2)
	}
}

// startTrace starts runtime/trace into path (nothing when path is empty); the returned func stops it.
func startTrace(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fail(err)
	}
	if err := trace.Start(bufio.NewWriterSize(f, 1<<20)); err != nil {
		fail(err)
	}
	return func() { trace.Stop(); f.Close() }
}

// runOnRequest prints the pid, then runs work for each "run DURATION" line of stdin until EOF.
func runOnRequest(work func(until time.Time) int64) {
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]int{"pid": os.Getpid()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		d, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(in.Text(), "run")))
		if err != nil {
			fail(fmt.Errorf("expected 'run DURATION', got %q", in.Text()))
		}
		start := time.Now()
		ops := work(start.Add(d))
		out.Encode(map[string]int64{"ops": ops, "ns": time.Since(start).Nanoseconds()})
	}
}

// pingpong counts round trips: each parks and readies both goroutines once.
func pingpong(until time.Time) int64 {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	defer close(ping)
	var n int64
	for {
		// Checking the clock every 1024 round trips keeps time.Now out of the measured cost.
		for i := 0; i < 1024; i++ {
			ping <- i
			<-pong
		}
		n += 1024
		if time.Now().After(until) {
			return n
		}
	}
}

// churn counts goroutines started (and finished): batches of 64 that each send once on a
// buffered channel and exit.
func churn(until time.Time) int64 {
	const batch = 64
	done := make(chan int, batch)
	var n int64
	for time.Now().Before(until) {
		for i := 0; i < batch; i++ {
			go func(i int) { done <- i }(i)
		}
		for i := 0; i < batch; i++ {
			<-done
		}
		n += batch
	}
	return n
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchload:", err)
	os.Exit(1)
}

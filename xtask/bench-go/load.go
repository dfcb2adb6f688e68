package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

// load sends GETs at a fixed rate for duration, from conns workers that each keep one
// connection. Latency counts from when a request was due, not when a worker got to it, so a
// slow server is not hidden by fewer requests (no coordinated omission). Prints
// {"requests":N,"errors":E,"p50_ns":..,"p99_ns":..}.
func load(url string, rate float64, duration time.Duration, conns int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	due := make(chan time.Time, 1<<16)
	var mu sync.Mutex
	var latencies []time.Duration
	var errors int64
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var failed int64
			for at := range due {
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					failed++
					continue
				}
				mine = append(mine, time.Since(at))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errors += failed
			mu.Unlock()
		}()
	}
	pace(due, rate, duration)
	close(due)
	wg.Wait()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	json.NewEncoder(os.Stdout).Encode(map[string]int64{
		"requests": int64(len(latencies)),
		"errors":   errors,
		"p50_ns":   int64(quantile(latencies, 0.50)),
		"p99_ns":   int64(quantile(latencies, 0.99)),
	})
}

// pace puts the due time of every request on due: rate a second, checked every millisecond.
func pace(due chan<- time.Time, rate float64, duration time.Duration) {
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var sent int64
	for now := range tick.C {
		elapsed := now.Sub(start)
		if elapsed > duration {
			elapsed = duration
		}
		for target := int64(elapsed.Seconds() * rate); sent < target; sent++ {
			due <- start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
		}
		if elapsed >= duration {
			return
		}
	}
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))]
}

// Fixture program for goscope-inspect tests: exercises goroutine creation,
// channel send/receive (buffered and unbuffered), select, sync.Mutex,
// sync.WaitGroup and sync.Cond so that the runtime functions the agent
// probes are linked in. It exits by itself after a short while.
package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func producer(out chan<- int, n int, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; i < n; i++ {
		out <- i
	}
}

func consumer(in <-chan int, quit <-chan struct{}, c *counter, done chan<- int) {
	sum := 0
	for {
		select {
		case v, ok := <-in:
			if !ok {
				done <- sum
				return
			}
			sum += v
			c.inc()
		case <-quit:
			done <- sum
			return
		case <-time.After(5 * time.Second):
			done <- -1
			return
		}
	}
}

func main() {
	unbuf := make(chan int)
	buf := make(chan int, 4)
	quit := make(chan struct{})
	done := make(chan int, 2)
	var c counter
	var wg sync.WaitGroup
	wg.Add(2)
	go producer(unbuf, 100, &wg)
	go producer(buf, 100, &wg)
	go consumer(unbuf, quit, &c, done)
	go consumer(buf, quit, &c, done)

	cond := sync.NewCond(&sync.Mutex{})
	ready := false
	go func() {
		cond.L.Lock()
		ready = true
		cond.L.Unlock()
		cond.Broadcast()
	}()
	cond.L.Lock()
	for !ready {
		cond.Wait()
	}
	cond.L.Unlock()

	wg.Wait()
	close(quit)
	a, b := <-done, <-done
	fmt.Fprintln(os.Stdout, "sum", a+b, "count", c.n)
}

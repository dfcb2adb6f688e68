// inline: prints runtime.Callers stacks that go through inlined calls, with the runtime's own
// expansion of them (runtime.CallersFrames), for goscope-inspect's symbolize_frames tests.
//
// Output, per stack:
//
//	stack <name>
//	pcs 0x.. 0x..           (runtime.Callers, one PC per logical frame)
//	frame <function>\t<file>\t<line>   (runtime.CallersFrames, in order)
//	end
//
// plus one line "main_entry 0x.." (runtime address of main.main, for the PIE load bias).
package main

import (
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
)

//go:noinline
func leaf() []uintptr {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(0, pcs)
	return pcs[:n]
}

type T struct{ n int }

// method and inl1 (and inl2 in other.go) are small enough to be inlined.
func (t *T) method() []uintptr {
	t.n++
	return inl1()
}

func inl1() []uintptr {
	x := inl2()
	return x
}

//go:noinline
func outer() []uintptr {
	t := &T{}
	return t.method()
}

//go:noinline
func viaClosure() []uintptr {
	f := func() []uintptr { return inl1() }
	return f()
}

var once sync.Once

// sync.(*Once).Do is inlined here (its fast path); doSlow is not, and calls the closure.
//
//go:noinline
func viaOnce() []uintptr {
	var pcs []uintptr
	once.Do(func() { pcs = leaf() })
	return pcs
}

func main() {
	var b strings.Builder
	fmt.Fprintf(&b, "main_entry %#x\n", runtime.FuncForPC(reflect.ValueOf(main).Pointer()).Entry())
	for _, s := range []struct {
		name string
		pcs  []uintptr
	}{{"outer", outer()}, {"closure", viaClosure()}, {"once", viaOnce()}} {
		fmt.Fprintf(&b, "stack %s\npcs", s.name)
		for _, pc := range s.pcs {
			fmt.Fprintf(&b, " %#x", pc)
		}
		b.WriteString("\n")
		frames := runtime.CallersFrames(s.pcs)
		for {
			fr, more := frames.Next()
			fmt.Fprintf(&b, "frame %s\t%s\t%d\n", fr.Function, fr.File, fr.Line)
			if !more {
				break
			}
		}
		b.WriteString("end\n")
	}
	os.Stdout.WriteString(b.String())
}

package kvc

/*
#include <stdint.h>
#include <stddef.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// kvcGoOnToken is the Go side of kvc_generate's token callback (generate.go passes it a
// cgo.Handle of the call's *generation as an integer). It returns 1 to stop.
//
//export kvcGoOnToken
func kvcGoOnToken(handle C.uintptr_t, token C.int32_t, piece *C.char, n C.size_t) C.int32_t {
	g := cgo.Handle(handle).Value().(*generation)
	if g.panicked {
		return 1
	}
	var b []byte
	if n > 0 {
		b = C.GoBytes(unsafe.Pointer(piece), C.int(n))
	}
	g.text = append(g.text, b...)
	if g.onToken == nil {
		return 0
	}
	goOn := false
	func() {
		// A panic must not unwind into C: it stops the generation and is re-raised by
		// Generate once the C call has returned.
		defer func() {
			if v := recover(); v != nil {
				g.panicked, g.panicVal = true, v
			}
		}()
		goOn = g.onToken(int32(token), string(b))
	}()
	if goOn {
		return 0
	}
	return 1
}

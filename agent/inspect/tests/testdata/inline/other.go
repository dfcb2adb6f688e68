package main

// inl2 is inlined into inl1 (itself inlined): its frame has this file.
func inl2() []uintptr {
	return leaf()
}

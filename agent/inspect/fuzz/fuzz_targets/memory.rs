//! goscope-memory's decoders over a process memory made of the input (see
//! `goscope_memory::fuzzing`): the whole snapshot (goroutine list at 0x10000, g structs, stack
//! walks, sudogs, channels) and the walk of `runtime.semtable`'s sudog treaps as a process of a real (cut-down) Go 1.26 binary would have it, and
//! the reachability fixpoint over a heap and stacks read from the same bytes, and the leak proof
//! as goscope runs it on a process (span metadata, heap bitmaps, malloc headers, stack maps) over
//! them. Whatever the memory holds: no panic, and reads within the budget.
#![no_main]

use std::sync::LazyLock;

use goscope_inspect::GoBinary;
use goscope_memory::fuzzing;
use libfuzzer_sys::fuzz_target;

static BINARY: LazyLock<GoBinary> = LazyLock::new(|| {
    GoBinary::from_bytes(include_bytes!("../corpus/go_binary/seed-go1.26-dwarf")).expect("the seed binary analyses")
});
/// The same program with its Go version's offsets table, which has the heap's offsets.
static TABLE_BINARY: LazyLock<GoBinary> = LazyLock::new(|| {
    GoBinary::from_bytes(include_bytes!("../corpus/go_binary/seed-go1.26-symtab")).expect("the seed binary analyses")
});

fuzz_target!(|data: &[u8]| {
    let run = fuzzing::snapshot_bytes(&BINARY, data);
    assert!(run.bytes_requested <= 64 << 20, "{} bytes requested", run.bytes_requested);
    if let Ok(snap) = &run.result {
        assert!(snap.goroutines.len() as u64 <= snap.stats.allglen, "more goroutines than the list holds");
    }
    let _ = fuzzing::semtable(&BINARY, fuzzing::FakeProcess::flat(data.to_vec()));
    let _ = fuzzing::reach_bytes(data);
    let _ = fuzzing::process_heap_bytes(&TABLE_BINARY, data);
});

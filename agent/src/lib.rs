//! goscope: watches running Go programs from the outside. One folder per stage, data flowing one
//! way (a stage uses only the stages listed before it):
//!
//! 1. [`target`]: the process, its analysed binary ([`target::TargetContext`]) and the eBPF probes
//!    attached to it.
//! 2. [`model`]: what goscope knows about the process: decoded events, source sites, goroutine
//!    and channel state, what a park means.
//! 3. [`detect`]: pure judgements of the state: blocked goroutines, growing piles, proven leaks,
//!    deadlocks. Each returns findings with a typed identity ([`detect::FindingKey`]).
//! 4. [`sink`]: where results go: JSON lines ([`sink::OutputLine`]), text, the `--top` screen, OTLP.
//! 5. [`session`]: one watching session: the ring-buffer reader, the processor loop that feeds
//!    events to the state, runs the detectors on each tick and writes to the sinks, and the
//!    finding tracker.
//! 6. [`cli`]: the subcommands (`attach`, `run`, `dump`, `inspect`) that put the stages together.
//!
//! Binary analysis (`goscope-inspect`) and memory reading (`goscope-memory`) are crates of their
//! own; the kernel side and its ABI are `agent-ebpf`.
pub mod cli;
pub mod detect;
pub mod model;
pub mod session;
pub mod sink;
pub mod target;

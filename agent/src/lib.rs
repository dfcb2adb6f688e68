//! goscope: the pipeline, one module per stage.
//!
//! target (pid → exe) → `inspect` (Go binary analysis) → `probes` (load + attach) →
//! `events` (ring-buffer bytes → typed events) → `output` (text / JSON lines).
pub mod attach;
pub mod detect;
pub mod dump_cmd;
pub mod events;
pub mod export;
pub mod inspect_cmd;
pub mod leakscan;
pub mod node;
pub mod output;
pub mod park;
pub mod pipeline;
pub mod privilege;
pub mod probes;
pub mod state;
pub mod summary;
pub mod target;

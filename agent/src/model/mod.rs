//! What goscope knows about a watched process, independent of how it learned it or how it
//! reports it: decoded events, source sites, goroutine and channel state, and what a park means.
//!
//! Depends on `target` (the binary, to symbolize) and nothing after it.
pub mod events;
pub mod park;
pub mod site;
pub mod state;

pub use site::{Location, hex};

//! Places in the target's code and addresses, as every stage names them.

/// A place in the target's source: one type from symbolizing a PC (goscope-inspect) through stack
/// walks (goscope-memory) to park sites, finding stacks and OTLP attributes here. Serialized as
/// `{"function","file","line"}` in every JSON line.
pub use goscope_inspect::Location;

/// An address as the output shows it: `0xc000012000`.
pub fn hex(addr: u64) -> String {
    format!("{addr:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_its_source_position() {
        let linked = Location { entry: 0x40_1000, ..Location::new("main.f", "/src/m.go", 7) };
        let running = Location { entry: 0x5555_0040_1000, ..linked.clone() };
        assert_eq!(linked, running, "the entry address is not part of the position");
        assert_eq!(serde_json::to_string(&running).unwrap(), r#"{"function":"main.f","file":"/src/m.go","line":7}"#);
        assert_ne!(linked, Location::new("main.f", "/src/m.go", 8));
    }
}

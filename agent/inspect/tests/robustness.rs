//! Malformed input never panics and yields errors with actionable messages.

mod common;

use common::{Variant, fixture_or_skip};
use goscope_inspect::{GoBinary, InspectError};

/// xorshift64* — deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_are_rejected() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for len in [0usize, 1, 3, 4, 16, 63, 64, 65, 200, 4096, 70_000] {
        for _ in 0..20 {
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(GoBinary::from_bytes(&data).is_err());
            // Same with a valid ELF64 magic/ident so the header parsers are exercised.
            if len >= 16 {
                data[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
                assert!(GoBinary::from_bytes(&data).is_err());
            }
        }
    }
}

#[test]
fn error_messages() {
    assert!(matches!(
        GoBinary::from_bytes(b"hello"),
        Err(InspectError::NotElf)
    ));
    let e = GoBinary::open(std::path::Path::new("/nonexistent/goscope/bin")).unwrap_err();
    assert!(matches!(e, InspectError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/goscope/bin"));
    // A real non-Go ELF (the test binary itself is Rust).
    let me = std::env::current_exe().unwrap();
    let e = GoBinary::open(&me).unwrap_err();
    assert!(matches!(e, InspectError::NotGo), "{e}");
    assert_eq!(
        e.to_string(),
        "not a Go binary: no .go.buildinfo section or Go build id note"
    );
    let mut elf32 = vec![0u8; 64];
    elf32[..6].copy_from_slice(b"\x7fELF\x01\x01");
    assert!(matches!(
        GoBinary::from_bytes(&elf32),
        Err(InspectError::UnsupportedArch { .. })
    ));
    for e in [InspectError::NotElf, InspectError::NotGo] {
        assert!(!e.to_string().contains('\n'));
    }
}

fn check_mutations(data: &[u8], iterations: usize, seed: u64) {
    let mut rng = Rng(seed);
    // Truncations at many points, including inside every header.
    let mut cuts: Vec<usize> = (0..64).chain([100, 500, 4096, 65536]).collect();
    for _ in 0..40 {
        cuts.push(rng.below(data.len()));
    }
    for cut in cuts {
        if cut < data.len() {
            let _ = GoBinary::from_bytes(&data[..cut]);
        }
    }
    assert!(
        GoBinary::from_bytes(&data[..data.len() / 2]).is_err(),
        "half a binary must not parse"
    );
    // Random byte corruption, concentrated on the first pages (headers, notes, buildinfo) and
    // spread over the rest.
    for _ in 0..iterations {
        let mut d = data.to_vec();
        let n = 1 + rng.below(16);
        for _ in 0..n {
            let pos = if rng.below(2) == 0 {
                rng.below(4096.min(d.len()))
            } else {
                rng.below(d.len())
            };
            d[pos] = rng.next() as u8;
        }
        let _ = GoBinary::from_bytes(&d);
    }
}

#[test]
fn mutated_stripped_binary_never_panics() {
    let Some(p) = fixture_or_skip(None, Variant::Stripped) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    check_mutations(&data, 300, 7);
    // Targeted: corrupt the pclntab header fields and the buildinfo varints.
    let b = GoBinary::from_bytes(&data).unwrap();
    assert!(b.pclntab_len() > 0);
    let magic_pos = data.windows(4).position(|w| w == [0xf1, 0xff, 0xff, 0xff]);
    if let Some(pos) = magic_pos {
        for field in 0..9 {
            for v in [0u64, 1, u64::MAX, u64::MAX / 2, data.len() as u64] {
                let mut d = data.clone();
                let o = pos + 8 + 8 * field;
                if o + 8 <= d.len() {
                    d[o..o + 8].copy_from_slice(&v.to_le_bytes());
                    let _ = GoBinary::from_bytes(&d);
                }
            }
        }
    }
    // Without section headers every lookup goes through the segment scanners.
    let mut headless = data.clone();
    headless[0x28..0x30].fill(0);
    headless[0x3c..0x40].fill(0);
    assert!(GoBinary::from_bytes(&headless).is_ok());
    check_mutations(&headless, 150, 13);
    let bi = data
        .windows(14)
        .position(|w| w == b"\xff Go buildinf:")
        .unwrap();
    for v in [0u8, 0x7f, 0x80, 0xff] {
        let mut d = data.clone();
        d[bi + 32] = v;
        let _ = GoBinary::from_bytes(&d);
        d[bi + 15] = v;
        let _ = GoBinary::from_bytes(&d);
    }
}

#[test]
fn mutated_dwarf_binary_never_panics() {
    let Some(p) = fixture_or_skip(None, Variant::Plain) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    check_mutations(&data, 25, 11);
}

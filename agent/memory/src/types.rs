//! Names of Go types from their runtime descriptors (`abi.Type`, `runtime._type` before 1.21):
//! what a channel carries, from `hchan.elemtype`. The descriptor layout is the same in Go
//! 1.19-1.27: `TFlag` at 20, `Str` (a name offset from `moduledata.types`) at 40.
use std::collections::HashMap;

use crate::{MemoryError, ProcessMemory};

const TFLAG: usize = 20;
const STR: usize = 40;
const DESCRIPTOR: usize = 48;
/// The name is stored with a leading '*' (the pointer type's name is the one kept).
const TFLAG_EXTRA_STAR: u8 = 1 << 1;
/// Longest name kept; longer ones (huge anonymous structs) are cut.
const MAX_NAME: usize = 512;
/// A name record: one flags byte, a uvarint length (2 bytes for names up to 16 KiB), the bytes.
const NAME_HEADER: usize = 3;

/// Names of the type descriptors at runtime addresses `types`, where `types_base` is the
/// runtime address of `moduledata.types`. Descriptors that do not read or decode are left out.
pub fn type_names(mem: &ProcessMemory, types_base: u64, types: &[u64]) -> Result<HashMap<u64, String>, MemoryError> {
    let descriptors = mem.read_batch(&types.iter().map(|&t| (t, DESCRIPTOR)).collect::<Vec<_>>())?;
    let mut pending = Vec::new();
    for (i, &t) in types.iter().enumerate() {
        let Some(d) = descriptors.get(i) else { continue };
        let off = i32::from_le_bytes(d[STR..STR + 4].try_into().unwrap_or_default());
        if let Ok(off) = u64::try_from(off) {
            pending.push((t, types_base.wrapping_add(off), d[TFLAG] & TFLAG_EXTRA_STAR != 0));
        }
    }
    let names = mem.read_batch(&pending.iter().map(|&(_, at, _)| (at, NAME_HEADER + MAX_NAME)).collect::<Vec<_>>())?;
    Ok(pending
        .iter()
        .enumerate()
        .filter_map(|(i, &(t, _, extra_star))| {
            let name = decode_name(names.get(i)?)?;
            let name = if extra_star { name.strip_prefix('*').unwrap_or(name) } else { name };
            Some((t, name.to_owned()))
        })
        .collect())
}

/// The text of a name record (`internal/abi.Name`): flags byte, uvarint length, bytes. Names
/// longer than the bytes given are cut at a character boundary.
fn decode_name(b: &[u8]) -> Option<&str> {
    let (mut len, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *b.get(at)?;
        len |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 14 {
            return None;
        }
    }
    let bytes = b.get(at..)?;
    let bytes = &bytes[..len.min(bytes.len())];
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.is_empty() => Some(s),
        Err(e) if e.valid_up_to() > 0 => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_with_their_varint_length() {
        assert_eq!(decode_name(&[0, 3, b'i', b'n', b't', 0xff]), Some("int"));
        let long = [&[0u8, 0x81, 0x01][..], &[b'x'; 129][..]].concat();
        assert_eq!(decode_name(&long).map(str::len), Some(129));
        // Cut short by the read: what there is, at a character boundary.
        assert_eq!(decode_name(&[0, 9, b'a', 0xc3]), Some("a"));
        assert_eq!(decode_name(&[0, 0]), None);
        assert_eq!(decode_name(&[0, 0xff, 0xff, 0xff, 0xff]), None);
    }
}

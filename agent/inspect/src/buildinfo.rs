//! `.go.buildinfo` (toolchain version + module info) and the `.note.go.buildid` note.
//!
//! Layout (Go >= 1.18 "inline strings" format, flags bit 1):
//! `"\xff Go buildinf:"`(14) ptrSize(1) flags(1) 16 bytes of zero, then `uvarint len + version`,
//! `uvarint len + modinfo`; modinfo is wrapped in two 16-byte sentinels.

use serde::Serialize;

use crate::elf::Elf;
use crate::error::{InspectError, Result};

pub(crate) const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Longest version or modinfo string accepted (modinfo of large programs is a few KiB).
const MAX_STRING: u64 = 1 << 20;

/// A Go toolchain version, e.g. go1.21.13 -> {1, 21, 13}.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoVersion {
    /// Always 1 so far.
    pub major: u32,
    /// Minor release (21 for go1.21.13).
    pub minor: u32,
    /// Patch release (0 for "go1.21", "go1.21rc2").
    pub patch: u32,
    /// The string as stored in the binary ("go1.21.13", possibly with an " X:..." suffix).
    pub raw: String,
}

impl GoVersion {
    /// Parses "go1.21.13", "go1.22", "go1.21rc2", "go1.26.1 X:nodwarf5", "devel go1.23-abcdef ...".
    pub fn parse(s: &str) -> Option<GoVersion> {
        let start = s.find("go1.")?;
        let rest = &s[start + 2..];
        let mut nums = [0u32; 3];
        let mut idx = 0;
        let mut any = false;
        for c in rest.chars() {
            if let Some(d) = c.to_digit(10) {
                nums[idx] = nums[idx].checked_mul(10)?.checked_add(d)?;
                any = true;
            } else if c == '.' && idx < 2 && any {
                idx += 1;
                any = false;
            } else {
                break;
            }
        }
        if idx == 0 {
            return None;
        }
        Some(GoVersion { major: nums[0], minor: nums[1], patch: nums[2], raw: s.to_string() })
    }

    /// "1.21"
    pub fn minor_string(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

/// What `.go.buildinfo` and the build-id note say about the binary.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    /// Toolchain version.
    pub go_version: GoVersion,
    /// Main package path (`path` line of modinfo), empty if absent.
    pub path: String,
    /// Main module path (`mod` line), empty if absent.
    pub module: String,
    /// Main module version (`mod` line), e.g. "(devel)".
    pub module_version: String,
    /// `build` key/value lines in order (`-compiler`, `CGO_ENABLED`, `GOARCH`, ...).
    pub settings: Vec<(String, String)>,
    /// Built with cgo: `CGO_ENABLED=1` in settings or cgo symbols present.
    pub cgo: bool,
    /// Go build ID from the `.note.go.buildid` note.
    pub build_id: Option<String>,
}

/// Version string and raw modinfo text from the blob starting at the magic.
pub(crate) fn parse_buildinfo_blob(blob: &[u8]) -> Result<(String, String)> {
    if blob.len() < 32 {
        return Err(InspectError::truncated(".go.buildinfo header"));
    }
    if &blob[..14] != BUILDINFO_MAGIC {
        return Err(InspectError::malformed(".go.buildinfo does not start with the buildinfo magic"));
    }
    let flags = blob[15];
    if flags & 2 == 0 {
        return Err(InspectError::UnsupportedGoVersion {
            version: "pre-go1.18".into(),
            reason: "binary uses the pre-Go 1.18 buildinfo format; goscope supports Go 1.19 and newer — rebuild with a supported toolchain".into(),
        });
    }
    let mut pos = 32usize;
    let version = read_varint_bytes(blob, &mut pos, "Go version string in .go.buildinfo")?;
    let modinfo =
        if pos < blob.len() { read_varint_bytes(blob, &mut pos, "modinfo in .go.buildinfo").unwrap_or_default() } else { &[] };
    Ok((String::from_utf8_lossy(version).into_owned(), String::from_utf8_lossy(strip_sentinels(modinfo)).into_owned()))
}

fn read_varint_bytes<'a>(b: &'a [u8], pos: &mut usize, what: &str) -> Result<&'a [u8]> {
    let (len, n) = uvarint(b.get(*pos..).unwrap_or(&[])).ok_or_else(|| InspectError::truncated(what.to_string()))?;
    *pos += n;
    if len > MAX_STRING {
        return Err(InspectError::malformed(format!("{what} has implausible length {len}")));
    }
    let end = pos.checked_add(len as usize).filter(|e| *e <= b.len()).ok_or_else(|| InspectError::truncated(what.to_string()))?;
    let s = &b[*pos..end];
    *pos = end;
    Ok(s)
}

/// modinfo is wrapped in 16-byte binary sentinels (cmd/go's modinfo start/end markers).
fn strip_sentinels(b: &[u8]) -> &[u8] {
    if b.len() >= 33 && b[b.len() - 17] == b'\n' {
        return &b[16..b.len() - 16];
    }
    b
}

/// Reads an unsigned LEB128 varint; returns (value, bytes consumed).
pub(crate) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for (i, &byte) in b.iter().enumerate() {
        if i >= 10 {
            return None;
        }
        let low = u64::from(byte & 0x7f);
        if shift == 63 && low > 1 {
            return None;
        }
        x |= low << shift;
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
        shift += 7;
    }
    None
}

/// Parsed modinfo text.
pub(crate) struct ModInfo {
    pub path: String,
    pub module: String,
    pub module_version: String,
    pub settings: Vec<(String, String)>,
}

pub(crate) fn parse_modinfo(text: &str) -> ModInfo {
    let mut mi = ModInfo { path: String::new(), module: String::new(), module_version: String::new(), settings: Vec::new() };
    for line in text.lines() {
        let mut fields = line.splitn(2, '\t');
        let kind = fields.next().unwrap_or("");
        let rest = fields.next().unwrap_or("");
        match kind {
            "path" => mi.path = rest.to_string(),
            "mod" => {
                let mut f = rest.split('\t');
                mi.module = f.next().unwrap_or("").to_string();
                mi.module_version = f.next().unwrap_or("").to_string();
            }
            "build" => {
                // key=value; keys may be quoted (strconv.Quote) when they contain '=' etc.
                let (k, v) = split_setting(rest);
                mi.settings.push((k, v));
            }
            _ => {}
        }
    }
    mi
}

fn split_setting(s: &str) -> (String, String) {
    if let Some(stripped) = s.strip_prefix('"') {
        // Quoted key: find the closing quote not preceded by a backslash.
        let bytes = stripped.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' {
                i += 2;
                continue;
            }
            if bytes[i] == b'"' {
                let key = stripped[..i].to_string();
                let value = stripped[i + 1..].strip_prefix('=').unwrap_or(&stripped[i + 1..]);
                return (key, unquote(value));
            }
            i += 1;
        }
    }
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), unquote(v)),
        None => (s.to_string(), String::new()),
    }
}

fn unquote(v: &str) -> String {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(o) => out.push(o),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    v.to_string()
}

/// Finds the buildinfo blob: the `.go.buildinfo` section, else a 16-byte-aligned magic in the
/// writable data (what debug/buildinfo does when there are no section headers).
pub(crate) fn find_buildinfo<'a>(elf: &Elf<'a>) -> Option<&'a [u8]> {
    if let Some(s) = elf.section(".go.buildinfo")
        && let Some(d) = elf.section_data(s)
        && d.starts_with(BUILDINFO_MAGIC)
    {
        return Some(d);
    }
    let mut regions = elf.writable_regions();
    if regions.is_empty() {
        regions = elf.load_regions();
    }
    for (vaddr, bytes) in regions {
        // Align the search to 16 bytes of virtual address.
        let skip = ((16 - (vaddr % 16)) % 16) as usize;
        let mut off = skip;
        while off + 32 <= bytes.len() {
            if &bytes[off..off + 14] == BUILDINFO_MAGIC {
                return Some(&bytes[off..]);
            }
            off += 16;
        }
    }
    None
}

/// Go build id from the `Go`/type 4 ELF note.
pub(crate) fn go_build_id(elf: &Elf<'_>) -> Option<String> {
    elf.notes(b"Go", 4).into_iter().next().map(|d| String::from_utf8_lossy(d).trim_end_matches('\0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = BUILDINFO_MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.extend_from_slice(&[0u8; 16]);
        b.push(version.len() as u8);
        b.extend_from_slice(version.as_bytes());
        let mut wrapped = vec![0x30u8; 16];
        wrapped.extend_from_slice(modinfo.as_bytes());
        wrapped.extend_from_slice(&[0xf9u8; 16]);
        let mut n = wrapped.len();
        while n >= 0x80 {
            b.push((n as u8) | 0x80);
            n >>= 7;
        }
        b.push(n as u8);
        b.extend_from_slice(&wrapped);
        b
    }

    #[test]
    fn parses_inline_format() {
        let mi = "path\texample.com/x\nmod\texample.com/x\t(devel)\t\nbuild\t-compiler=gc\nbuild\tCGO_ENABLED=1\nbuild\t\"weird=key\"=\"v a\"\nbuild\tGOARCH=amd64\n";
        let (v, m) = parse_buildinfo_blob(&blob("go1.21.13", mi)).unwrap();
        assert_eq!(v, "go1.21.13");
        assert_eq!(m, mi);
        let p = parse_modinfo(&m);
        assert_eq!(p.path, "example.com/x");
        assert_eq!(p.module, "example.com/x");
        assert_eq!(p.module_version, "(devel)");
        assert_eq!(p.settings[1], ("CGO_ENABLED".to_string(), "1".to_string()));
        assert_eq!(p.settings[2], ("weird=key".to_string(), "v a".to_string()));
        assert_eq!(p.settings.len(), 4);
    }

    #[test]
    fn rejects_old_format_and_truncation() {
        let mut b = blob("go1.17", "");
        b[15] = 0;
        assert!(matches!(parse_buildinfo_blob(&b), Err(InspectError::UnsupportedGoVersion { .. })));
        let b = blob("go1.21.13", "path\tx\n");
        for cut in 0..40 {
            assert!(parse_buildinfo_blob(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut b = blob("go1.21.13", "");
        b[32] = 0xff; // varint that runs off the end
        b.truncate(36);
        assert!(parse_buildinfo_blob(&b).is_err());
    }

    #[test]
    fn version_parsing() {
        let v = GoVersion::parse("go1.21.13").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 13));
        let v = GoVersion::parse("go1.22").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 0));
        let v = GoVersion::parse("go1.21rc2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 0));
        let v = GoVersion::parse("go1.26.1 X:nodwarf5").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 26, 1));
        let v = GoVersion::parse("devel go1.23-abcdef Tue").unwrap();
        assert_eq!((v.major, v.minor), (1, 23));
        assert!(GoVersion::parse("garbage").is_none());
        assert!(GoVersion::parse("go1.99999999999999999999").is_none());
    }

    #[test]
    fn uvarint_limits() {
        assert_eq!(uvarint(&[0x00]), Some((0, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 11]), None);
    }
}

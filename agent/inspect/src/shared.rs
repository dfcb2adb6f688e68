//! The executable's bytes, shared: the tables an analysed binary keeps for its whole life
//! (`.gopclntab`, the symbol names) are ranges of the file it was read from, not copies. A caller
//! that maps the file (goscope's agent) then holds in memory only the pages a lookup touches.
use std::{ops::Deref, sync::Arc};

/// The whole executable: a `Vec<u8>` read from disk, or a read-only mapping of the file.
pub type FileBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A range of a [`FileBytes`], or bytes of its own (tests, fuzzing, parts found outside the file).
#[derive(Clone)]
pub(crate) struct SharedSlice {
    file: FileBytes,
    start: usize,
    end: usize,
}

impl SharedSlice {
    /// `part`, which must be a sub-slice of `file`'s bytes, as a range of it; a copy when it is
    /// not one (never the case for slices the ELF reader hands out).
    pub fn of(file: &FileBytes, part: &[u8]) -> SharedSlice {
        let whole: &[u8] = (**file).as_ref();
        let base = whole.as_ptr().addr();
        let at = part.as_ptr().addr();
        match at.checked_sub(base) {
            Some(start) if start.checked_add(part.len()).is_some_and(|end| end <= whole.len()) => {
                SharedSlice { file: Arc::clone(file), start, end: start + part.len() }
            }
            _ => SharedSlice::owned(part.to_vec()),
        }
    }

    /// Bytes of its own.
    pub fn owned(bytes: Vec<u8>) -> SharedSlice {
        let end = bytes.len();
        SharedSlice { file: Arc::new(bytes), start: 0, end }
    }
}

impl Deref for SharedSlice {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &(*self.file).as_ref()[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_slice_is_shared_and_anything_else_copied() {
        let file: FileBytes = Arc::new(b"0123456789".to_vec());
        let whole: &[u8] = (*file).as_ref();
        let part = SharedSlice::of(&file, &whole[3..6]);
        assert_eq!(&*part, b"345");
        assert!(Arc::ptr_eq(&part.file, &file));
        let elsewhere = SharedSlice::of(&file, b"345");
        assert_eq!(&*elsewhere, b"345");
        assert!(!Arc::ptr_eq(&elsewhere.file, &file));
    }
}

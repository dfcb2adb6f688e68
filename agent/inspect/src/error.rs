//! Error type of the crate. Every message is one line that says what is wrong and what to do.

/// Why a binary could not be analysed.
#[derive(thiserror::Error, Debug)]
pub enum InspectError {
    /// The input does not start with the ELF magic.
    #[error("not an ELF file: goscope only inspects Linux ELF executables")]
    NotElf,
    /// ELF, but none of the Go markers were found.
    #[error("not a Go binary: no .go.buildinfo section or Go build id note")]
    NotGo,
    /// A Go binary whose toolchain version goscope cannot handle.
    #[error("unsupported Go version {version}: {reason}")]
    UnsupportedGoVersion {
        /// The version string as found in the binary (e.g. "go1.18.10").
        version: String,
        /// Why it is not supported and what to do about it.
        reason: String,
    },
    /// Not x86-64 / arm64 little-endian 64-bit ELF (or a feature not available for this arch).
    #[error("unsupported architecture {arch}: {reason}")]
    UnsupportedArch {
        /// Machine name, e.g. "EM_386", "arm64".
        arch: String,
        /// What is not supported.
        reason: String,
    },
    /// A structure extends past the end of the file or section.
    #[error("truncated binary: {what} extends past the end of the data (is the file complete?)")]
    Truncated {
        /// Which structure.
        what: String,
    },
    /// A structure has inconsistent content.
    #[error("malformed binary: {what}")]
    Malformed {
        /// Which structure and what is wrong with it.
        what: String,
    },
    /// A runtime function or variable that goscope needs was not found.
    #[error("missing symbol {name}: {reason}")]
    MissingSymbol {
        /// Symbol name, e.g. "runtime.gopark".
        name: String,
        /// Where it was looked for.
        reason: String,
    },
    /// The file exceeds the size goscope is willing to load.
    #[error("file too large: {size} bytes exceeds the {limit}-byte limit for binary inspection")]
    TooLarge {
        /// Size of the input.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path given to [`crate::GoBinary::open`].
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl InspectError {
    pub(crate) fn truncated(what: impl Into<String>) -> Self {
        InspectError::Truncated { what: what.into() }
    }
    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        InspectError::Malformed { what: what.into() }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = InspectError> = std::result::Result<T, E>;

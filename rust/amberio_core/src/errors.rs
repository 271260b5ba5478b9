//! Error type shared by the pure-Rust core modules (I/O, integrity, misuse); no Python here.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Every failure the core can report. `lib.rs` maps these onto Python exceptions:
/// `Io` → `OSError` (with errno and filename), `Integrity` → `IntegrityError(message, path)`,
/// `Invalid` → `ValueError`.
#[derive(Debug)]
pub enum CoreError {
    /// A system call failed. `path` names the file or directory involved, when there is one.
    Io {
        op: &'static str,
        path: Option<PathBuf>,
        source: io::Error,
    },
    /// Bytes on disk disagree with their recorded SHA-256 / CRC32C or size.
    Integrity { message: String, path: PathBuf },
    /// The caller used an object wrongly (bad argument, use after finish, ...).
    Invalid(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        CoreError::Io {
            op,
            path: Some(path.to_path_buf()),
            source,
        }
    }

    pub fn integrity(path: &Path, message: impl Into<String>) -> Self {
        CoreError::Integrity {
            message: message.into(),
            path: path.to_path_buf(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        CoreError::Invalid(message.into())
    }

    /// A copy of this error, for objects that fail again on every call after a first failure.
    pub fn replay(&self) -> Self {
        match self {
            CoreError::Io { op, path, source } => CoreError::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            CoreError::Integrity { message, path } => CoreError::Integrity {
                message: message.clone(),
                path: path.clone(),
            },
            CoreError::Invalid(m) => CoreError::Invalid(m.clone()),
        }
    }

    pub fn is_integrity(&self) -> bool {
        matches!(self, CoreError::Integrity { .. })
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Io {
                op,
                path: Some(p),
                source,
            } => write!(f, "{op} {}: {source}", p.display()),
            CoreError::Io {
                op,
                path: None,
                source,
            } => write!(f, "{op}: {source}"),
            CoreError::Integrity { message, .. } => f.write_str(message),
            CoreError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_replay() {
        let e = CoreError::io("open", Path::new("/x/y"), io::Error::from_raw_os_error(2));
        assert!(e.to_string().starts_with("open /x/y: "));
        let r = e.replay();
        match r {
            CoreError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(2)),
            _ => panic!("wrong kind"),
        }
        let i = CoreError::integrity(Path::new("/p"), "bad");
        assert!(i.is_integrity());
        assert_eq!(i.replay().to_string(), "bad");
        assert!(!CoreError::invalid("x").is_integrity());
    }
}

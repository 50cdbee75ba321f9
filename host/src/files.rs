//! Files an operator names (queues.toml, plugins, CA files, migrations),
//! read with a bound. Each is opened once and read from that handle, at most
//! one byte past the bound, and must be a regular file: a path that leads to
//! a device or a pipe, or a file that grows while it is read, cannot make
//! the host read without end or wait forever.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    NotRegular,
    /// `size` bytes (or more), over `max`.
    TooLarge {
        size: u64,
        max: u64,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular => f.write_str("not a regular file"),
            ReadError::TooLarge { size, max } => {
                write!(f, "the file is {size} bytes, more than {max} allowed")
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// The bytes of the regular file at `path`, refused if over `max`.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// Why a text file was not read.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("not UTF-8 text ({0})")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String, TextError> {
    let bytes = read(path, max)?;
    String::from_utf8(bytes).map_err(TextError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_sizes_and_refuses_what_is_not_a_file() {
        let dir = std::env::temp_dir().join(format!("switchyard-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read(&file, 5).unwrap(), b"12345");
        assert_eq!(
            read(&file, 4).unwrap_err().to_string(),
            "the file is 5 bytes, more than 4 allowed"
        );
        assert!(matches!(read(&dir, 5), Err(ReadError::NotRegular)));
        assert!(matches!(
            read(Path::new("/dev/zero"), 5),
            Err(ReadError::NotRegular)
        ));
        assert!(matches!(
            read(&dir.join("missing"), 5),
            Err(ReadError::Io(_))
        ));
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(
            read_text(&file, 5)
                .unwrap_err()
                .to_string()
                .starts_with("not UTF-8 text")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

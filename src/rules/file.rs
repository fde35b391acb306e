//! Reading the rules file: only a regular file (or a symlink to one), and at most a bounded
//! number of bytes.
//!
//! The type is checked on the opened handle, so a FIFO or device swapped in between a check
//! and the read cannot block or flood the reader: the file is opened non-blocking (opening a
//! FIFO with no writer would otherwise wait forever), `fstat` on that handle says what it
//! is, and only a regular file is read, through a reader that stops one byte past the cap.

use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::path::Path;

use super::RulesError;

/// The largest rules file read by default: 16 MiB, about 100,000 routes. Change it with
/// [`max_rules_file_bytes`](crate::LimiterBuilder::max_rules_file_bytes) or
/// [`Rules::from_file_with_max_bytes`](crate::Rules::from_file_with_max_bytes).
pub const DEFAULT_MAX_RULES_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The bytes of the rules file at `path`: an error naming it when it cannot be opened, is not
/// a regular file, or holds more than `max_bytes`.
pub(crate) fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>, RulesError> {
    read_bounded(path, max_bytes).map_err(|failure| match failure {
        Unread::Io(source) => RulesError::Read {
            path: path.to_owned(),
            source,
        },
        Unread::NotAFile(file_type) => RulesError::NotAFile {
            path: path.to_owned(),
            file_type,
        },
        Unread::TooLarge => RulesError::TooLarge {
            path: path.to_owned(),
            max_bytes,
        },
    })
}

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum Unread {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It is not a regular file, but this (`a FIFO (named pipe)`, `a directory`...).
    NotAFile(&'static str),
    /// It holds more than the most read.
    TooLarge,
}

/// The bytes of the regular file (or symlink to one) at `path`, if it holds at most
/// `max_bytes`: never more than that plus one byte is read.
pub(crate) fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Unread> {
    let file = open(path).map_err(|source| {
        // Opening a socket fails (ENXIO) before there is a handle to ask; name its type.
        match std::fs::metadata(path) {
            Ok(metadata) if !metadata.is_file() => {
                Unread::NotAFile(type_name(&metadata.file_type()))
            }
            _ => Unread::Io(source),
        }
    })?;
    let metadata = file.metadata().map_err(Unread::Io)?;
    if !metadata.is_file() {
        return Err(Unread::NotAFile(type_name(&metadata.file_type())));
    }
    if metadata.len() > max_bytes {
        return Err(Unread::TooLarge);
    }
    // The size can change after `fstat`; reading one byte past the cap tells without
    // holding more than that.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Unread::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Unread::TooLarge);
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO returns at once; a regular file reads the same.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

/// What a file that is not a regular file is, as `ls -l` would say it.
fn type_name(file_type: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn message(path: &Path, max_bytes: u64) -> String {
        match read(path, max_bytes) {
            Ok(bytes) => panic!("{} read {} bytes", path.display(), bytes.len()),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_regular_file_and_a_symlink_to_one_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.json");
        std::fs::write(&file, "{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&file, 2).unwrap(), b"{}");
        assert_eq!(read(&link, 2).unwrap(), b"{}");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("rules.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs (coreutils)");
        assert!(made.success());
        let started = Instant::now();
        let msg = message(&fifo, 1024);
        // No writer ever opens it: a blocking open or read would never return.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            msg,
            format!(
                "rules file {} is a FIFO (named pipe), not a regular file: only regular files (or symlinks to them) are read",
                fifo.display()
            )
        );
    }

    #[test]
    fn devices_directories_and_sockets_are_refused_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(
            message(&zero, 1024).contains("zero.json is a character device"),
            "{}",
            message(&zero, 1024)
        );
        assert!(message(Path::new("/dev/urandom"), 1024).contains("is a character device"));
        assert!(message(dir.path(), 1024).contains("is a directory"));
        let socket = dir.path().join("rules.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(message(&socket, 1024).contains("rules.sock is a socket"));
    }

    #[test]
    fn a_file_over_the_cap_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.json");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read(&file, 10).unwrap().len(), 10);
        assert_eq!(
            message(&file, 9),
            format!(
                "rules file {} is larger than 9 bytes, the most that is read (raise the limit with the builder's max_rules_file_bytes or check-rules --max-file-bytes)",
                file.display()
            )
        );
        // A sparse terabyte: refused on its size, so nothing is allocated for it.
        let sparse = dir.path().join("sparse.json");
        File::create(&sparse).unwrap().set_len(1 << 40).unwrap();
        assert!(message(&sparse, DEFAULT_MAX_RULES_FILE_BYTES).contains("larger than 16777216"));
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let err = read(Path::new("/definitely/not/here.json"), 10).unwrap_err();
        assert!(matches!(err, RulesError::Read { .. }), "{err}");
    }
}

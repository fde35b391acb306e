//! Rules files written as editors save them, and files that are not regular files, for
//! tests of what is refused without being read.
#![allow(dead_code)]

use std::path::Path;

/// Makes a FIFO (named pipe) at `path` with the system's `mkfifo`.
pub fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "mkfifo must be installed for this test (Debian/Ubuntu: apt-get install coreutils): {e}"
            )
        });
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Replaces `path` with `text` as editors save: written beside it, then renamed over it, so
/// a reader never sees it half written.
pub fn save_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

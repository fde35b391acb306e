//! Rules files that are not regular files, for tests of what is refused without being read.

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

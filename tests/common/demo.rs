//! The demo example's binary, run as a test's child process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo_file;

/// The demo example, built by `cargo test` next to this test binary.
pub fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let demo = profile_dir
        .join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX));
    let hint = "run the whole suite with `cargo test --all-features`, which builds the examples \
                (or `cargo build --all-features --examples` first, with --release for release tests)";
    let built = std::fs::metadata(&demo)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not found: {hint}", demo.display()));
    // A demo built before the sources it comes from changed would test old code. (The
    // `tollgate` binary's sources are not the demo's.)
    let newest_source = newest_files(&repo_file("src"))
        .into_iter()
        .filter(|(_, path)| !path.starts_with(repo_file("src/bin")))
        .chain(newest_files(&repo_file("examples")))
        .max();
    if let Some((changed, source)) = newest_source {
        assert!(
            changed <= built,
            "{} is older than {}: {hint}",
            demo.display(),
            source.display()
        );
    }
    demo
}

/// The files under `dir` (recursively) with their modification times.
fn newest_files(dir: &std::path::Path) -> Vec<(std::time::SystemTime, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(newest_files(&path));
        } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            found.push((modified, path));
        }
    }
    found
}

pub struct Demo {
    pub child: Child,
    pub address: String,
    /// What it logged before it listened.
    pub startup_log: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the demo on a free port and waits for its "listening on" line.
pub fn start_demo(envs: &[(&str, &str)]) -> Demo {
    let mut child = Command::new(demo_binary())
        .env_clear()
        .env("PORT", "0")
        .env("NO_COLOR", "1")
        .env("RATE_LIMIT_RULES_PATH", repo_file("rate_limits.json"))
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let address = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_owned();
            return Demo {
                child,
                address,
                startup_log: log,
            };
        }
        log.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("demo did not start:\n{}", log.join("\n"));
}

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
    let hint = "run the whole suite with `cargo test --workspace --all-features`, which builds the \
                examples (or `cargo build --workspace --all-features --examples` first, with \
                --release for release tests)";
    let built = std::fs::metadata(&demo)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not found: {hint}", demo.display()));
    // A demo built before the sources it comes from changed would test old code: the
    // library's, the server library's (the `tollgate` binary's sources and the other
    // examples are not the demo's) and its own.
    let newest_source = newest_files(&repo_file("src"))
        .into_iter()
        .chain(
            newest_files(&repo_file("server/src"))
                .into_iter()
                .filter(|(_, path)| !path.starts_with(repo_file("server/src/bin"))),
        )
        .chain(
            newest_files(&repo_file("server/examples"))
                .into_iter()
                .filter(|(_, path)| path.ends_with("demo.rs")),
        )
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
    /// What it logs from then on.
    later: std::sync::mpsc::Receiver<String>,
    /// Its working directory, where `tollgate serve` keeps its state file by default.
    pub workdir: tempfile::TempDir,
}

impl Demo {
    /// The gRPC address `tollgate serve` logged.
    pub fn grpc_address(&self) -> String {
        self.startup_log
            .iter()
            .find_map(|line| line.split("Envoy rate limit service (gRPC) on ").nth(1))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no gRPC address in {:?}", self.startup_log))
    }

    /// Stops the process (SIGTERM, so it shuts down as it would) and returns all it logged.
    /// Fails if it is still running 15 s later.
    pub fn stop_and_read_log(&mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running 15 s after SIGTERM; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }

    /// Everything logged so far.
    fn log(&self) -> String {
        let mut log = self.startup_log.clone();
        log.extend(self.later.try_iter());
        log.join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the demo on a free port and waits for its "listening on" line.
pub fn start_demo(envs: &[(&str, &str)]) -> Demo {
    let mut command = Command::new(demo_binary());
    command
        .env_clear()
        .env("PORT", "0")
        .env("NO_COLOR", "1")
        .env("RATE_LIMIT_RULES_PATH", repo_file("rate_limits.json"))
        .envs(envs.iter().copied());
    start_listening(command, "the demo")
}

/// The `tollgate` binary, built by `cargo test` for tollgate-server's tests (which cargo
/// tells where it is, in `CARGO_BIN_EXE_tollgate`).
pub fn tollgate_binary() -> PathBuf {
    match std::env::var_os("CARGO_BIN_EXE_tollgate") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "the tollgate binary is not built for this test: run it with `cargo test --workspace \
             --all-features` (the binary is tollgate-server's, with its `cli` feature)"
        ),
    }
}

/// `command` on free ports (`PORT`, `GRPC_PORT`), with only `envs` in its environment (and
/// `NO_COLOR`).
fn on_free_ports<K, V>(
    command: &mut Command,
    envs: impl IntoIterator<Item = (K, V)>,
) -> &mut Command
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .envs(envs)
}

/// Runs `tollgate serve` on free ports with only `envs` in its environment (and
/// `NO_COLOR`) until it exits by itself: for a start that must fail.
pub fn serve_until_it_exits(envs: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    on_free_ports(
        Command::new(tollgate_binary()).arg("serve"),
        envs.iter().copied(),
    )
    .output()
    .unwrap_or_else(|e| panic!("run tollgate serve: {e}"))
}

/// Starts `tollgate serve` on a free port with only `envs` in its environment (and
/// `NO_COLOR`), in a fresh working directory (so its default state file is its own), and
/// waits for its "listening on" line.
pub fn start_service(envs: &[(&str, &str)]) -> Demo {
    start_service_in(tempfile::tempdir().unwrap(), envs)
}

/// [`start_service`], in `workdir`: a directory the test put files in (a `.env`, a rules
/// file the service finds by itself).
pub fn start_service_in(workdir: tempfile::TempDir, envs: &[(&str, &str)]) -> Demo {
    let mut command = Command::new(tollgate_binary());
    on_free_ports(command.arg("serve"), envs.iter().copied());
    start_listening_in(command, "tollgate serve", workdir)
}

/// Runs `tollgate serve` with `args`, in `workdir`, on free ports with only `envs` in its
/// environment (and `NO_COLOR`), until it exits by itself: for a start that must fail.
pub fn serve_in_until_it_exits(
    workdir: &std::path::Path,
    envs: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    on_free_ports(
        Command::new(tollgate_binary()).arg("serve").args(args),
        envs.iter().copied(),
    )
    .current_dir(workdir)
    .output()
    .unwrap_or_else(|e| panic!("run tollgate serve: {e}"))
}

/// [`start_service`], with the open files limit of the process set to `soft` and `hard`
/// first (by `sh`'s `ulimit`; a hard limit above the test's own needs root).
pub fn start_service_with_open_files(soft: u64, hard: u64, envs: &[(&str, &str)]) -> Demo {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"ulimit -n "$1" && ulimit -S -n "$2" && exec "$0" serve"#)
        .arg(tollgate_binary())
        .arg(hard.to_string())
        .arg(soft.to_string());
    start_serving(command, envs)
}

/// Runs `command`, which execs `tollgate serve`, on free ports with only `envs`.
fn start_serving(mut command: Command, envs: &[(&str, &str)]) -> Demo {
    on_free_ports(&mut command, envs.iter().copied());
    start_listening(command, "tollgate serve")
}

/// Runs `command` in a fresh working directory and waits for its "listening on
/// http://ADDRESS" line on stdout.
fn start_listening(command: Command, what: &str) -> Demo {
    start_listening_in(command, what, tempfile::tempdir().unwrap())
}

/// [`start_listening`], in `workdir`.
fn start_listening_in(mut command: Command, what: &str, workdir: tempfile::TempDir) -> Demo {
    let mut child = command
        .current_dir(workdir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
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
            log.push(line);
            return Demo {
                child,
                address,
                startup_log: log,
                later: rx,
                workdir,
            };
        }
        log.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not start:\n{}", log.join("\n"));
}

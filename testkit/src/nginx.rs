//! Debian's nginx, run in the foreground from a temporary prefix, serving one of the
//! repository's server templates rendered as the official image renders it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{LOCAL_MAIN_CONF, free_port, render, repo_file};

/// The nginx binary, on `PATH` or where Debian puts it.
pub fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .expect(
            "nginx is needed by this test but was not found: install nginx: apt-get install nginx",
        )
}

/// nginx serving a rendered server template; killed when dropped. The template listens on
/// `${NGINX_PORT}` and answers `GET /nginx-health` itself.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves the repository's `template` with `vars` (and `NGINX_PORT`, a free loopback
    /// port), once nginx answers its health check.
    pub fn start(template: &str, vars: &[(&str, &str)]) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(template, vars, free_port()) {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(template: &str, vars: &[(&str, &str)], port: u16) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path();
        let template = std::fs::read_to_string(repo_file(template)).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut all = vec![("NGINX_PORT", listen.as_str())];
        all.extend_from_slice(vars);
        let rendered = render(&template, &all);
        std::fs::create_dir(prefix.join("conf.d")).unwrap();
        std::fs::write(prefix.join("conf.d/default.conf"), rendered).unwrap();
        let main = std::fs::read_to_string(repo_file(LOCAL_MAIN_CONF)).unwrap();
        let prefix_text = prefix.to_str().expect("a UTF-8 temporary path");
        let main = render(&main, &[("PREFIX", prefix_text)]);
        std::fs::write(prefix.join("nginx.conf"), main).unwrap();
        let mut child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nginx: {e}"))?;
        let log = || std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("nginx exited with {status}:\n{}", log()));
            }
            if nginx_answers(port) {
                return Ok(Self { child, port, dir });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("nginx not listening after 10 s:\n{}", log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What nginx has logged as errors so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// Whether nginx itself, not some other process that took the port, answers on `port`.
fn nginx_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = String::new();
    stream
        .write_all(b"GET /nginx-health HTTP/1.0\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.1 200")
        && reply.contains("Server: nginx")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

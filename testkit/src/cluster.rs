//! A real local Redis Cluster per test.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{free_port, launch_with, wait_for_ping};

/// A real local Redis Cluster for one test: `masters` masters, each with `replicas`
/// replicas, on free loopback ports (their cluster bus ports, +10000, free too), formed with
/// `redis-cli --cluster create`. A master that dies leaves the other masters serving their
/// slots (`cluster-require-full-coverage no`); a master with replicas fails over after about
/// a second (`cluster-node-timeout 1000`). Every node is stopped when dropped.
pub struct TestCluster {
    ports: Vec<u16>,
    processes: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the cluster");
        let count = masters * (1 + replicas);
        let mut ports = Vec::with_capacity(count);
        let mut processes = Vec::with_capacity(count);
        // A port found free can be taken before the node binds it (by another test's server,
        // or as a connection's local port): a node that cannot start is tried on another.
        let mut failures = Vec::new();
        while ports.len() < count {
            let port = free_port();
            let bus_free = port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
            if !bus_free || ports.contains(&port) {
                continue;
            }
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node directory");
            match try_launch_node(port, &node_dir) {
                Ok(child) => {
                    ports.push(port);
                    processes.push(Some(child));
                }
                Err(e) if failures.len() < 5 => failures.push(e),
                Err(e) => panic!("cluster node did not start: {e} (earlier tries: {failures:?})"),
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); install it with `apt-get install redis-tools`")
            });
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self {
            ports,
            processes,
            _dir: dir,
        };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok` with all slots assigned, and
    /// every replica has synced with its master (a replica that never synced does not stand
    /// for election when its master dies).
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let all_ok = self.live().all(|i| {
                let info: Result<String, _> =
                    redis::cmd("CLUSTER").arg("INFO").query(&mut self.node(i));
                let replication: Result<String, _> = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut self.node(i));
                info.is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_assigned:16384")
                }) && replication
                    .is_ok_and(|r| !r.contains("role:slave") || r.contains("master_link_status:up"))
            });
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node on `port` reports `cluster_state:ok`: it serves its slots.
    pub fn wait_until_serving(&self, port: u16, limit: Duration) {
        let node = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        let deadline = Instant::now() + limit;
        loop {
            let info: Result<String, _> = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut self.node(node));
            if info.is_ok_and(|info| info.contains("cluster_state:ok")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {port} does not serve after {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.ports.len()).filter(|i| self.processes[*i].is_some())
    }

    /// Seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn port(&self, node: usize) -> u16 {
        self.ports[node]
    }

    /// A direct connection to one node.
    pub fn node(&self, node: usize) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.ports[node]))
            .and_then(|c| c.get_connection())
            .expect("connect to a cluster node")
    }

    /// The port of the master serving `key`, asked of a live node.
    pub fn master_port_of(&self, key: &str) -> u16 {
        let node = self.live().next().expect("a live node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.node(node))
            .unwrap();
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.node(node))
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (redis::Value::Int(first), redis::Value::Int(last), redis::Value::Array(master)) =
                (&parts[0], &parts[1], &parts[2])
            else {
                continue;
            };
            if (*first..=*last).contains(&i64::from(slot)) {
                let redis::Value::Int(port) = master[1] else {
                    panic!("{master:?}")
                };
                return u16::try_from(port).unwrap();
            }
        }
        panic!("no master for slot {slot}");
    }

    /// The ports of the current masters.
    pub fn master_ports(&self) -> Vec<u16> {
        let node = self.live().next().expect("a live node");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.node(node))
            .unwrap();
        let mut masters: Vec<u16> = nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter_map(|addr| addr.split(['@', ':']).nth(1)?.parse().ok())
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The end of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.ports
            .iter()
            .map(|port| {
                let log = std::fs::read_to_string(
                    self._dir.path().join(port.to_string()).join("redis.log"),
                )
                .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node {port}\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the node on `port` again, after [`kill`](Self::kill), with its own
    /// `nodes.conf`: it comes back as the same node, with the slots it had.
    pub fn restart(&mut self, port: u16) {
        let node = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        assert!(self.processes[node].is_none(), "node {port} is running");
        let node_dir = self._dir.path().join(port.to_string());
        self.processes[node] = Some(launch_node(port, &node_dir));
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        if let Some(mut child) = self.processes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One cluster node in `dir`, answering PING.
fn launch_node(port: u16, dir: &std::path::Path) -> Child {
    try_launch_node(port, dir).unwrap_or_else(|e| panic!("cluster node did not start: {e}"))
}

/// [`launch_node`], or why the node did not come up.
fn try_launch_node(port: u16, dir: &std::path::Path) -> Result<Child, String> {
    let mut child = launch_with(
        port,
        dir,
        &[
            "--logfile",
            "redis.log",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ],
    );
    match wait_for_ping(port, &mut child, Duration::from_secs(10)) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.processes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

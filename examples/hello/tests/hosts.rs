//! A run spread over hosts made on this machine: network namespaces for the services (Redis,
//! RabbitMQ and PostgreSQL relayed from this machine, the monitor service), the orchestrator
//! and two agent hosts, each with its own temporary folder, so that nothing relies on a shared
//! file system or on loopback between components. The faults that a run must outlive: its
//! launcher killed, an agent host cut off, Redis restarted, every process of a run killed.
//!
//! Needs root (namespaces), iproute2 and socat, which `cargo xtask test` installs, and the
//! machine's RabbitMQ on 127.0.0.1:5672.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "hosts-test-token";
const MONITOR_PORT: u16 = 8400;
const STALL_SECS: u64 = 4;

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Hosts made on this machine: a network namespace per host, joined by veth pairs to one
/// bridge of their own, each host with its own temporary folder. Nothing reaches beyond
/// loopback and these namespaces' own addresses, and everything is removed on drop (or by
/// the next run, for a test that was killed).
struct Network {
    /// Prefix of every name this network made (namespaces, links).
    tag: String,
    /// The first three octets of its /24.
    subnet: String,
    bridge: String,
    hosts: Vec<Host>,
    /// Relays from the services host to the machine's own services on loopback.
    relays: Vec<Child>,
    relay_dir: tempfile::TempDir,
}

/// One host of a [`Network`].
struct Host {
    name: String,
    namespace: String,
    /// Its end of the veth pair, in the root namespace, on the bridge.
    link: String,
    address: String,
    dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap_or_else(|error| {
        panic!("these tests make hosts with iproute2's `ip` ({error}); `cargo xtask test` installs it")
    });
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Network {
    /// A network of these hosts: the first is `services`, which relays RabbitMQ and
    /// PostgreSQL of this machine and runs its own Redis.
    fn new(names: &[&str]) -> Self {
        // Distinct per network of this process, and per process on the machine.
        let serial = NETWORKS.fetch_add(1, Ordering::Relaxed) % 4;
        let number = std::process::id() % 60 * 4 + serial + 10;
        let tag = format!("arm{number}");
        Self::remove_leftovers(&tag);
        let subnet = format!("10.231.{number}");
        let bridge = format!("{tag}br");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        // The test itself is a host of the network too, at .1: it reads Redis and the monitor.
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut network = Self {
            tag: tag.clone(),
            subnet: subnet.clone(),
            bridge,
            hosts: Vec::new(),
            relays: Vec::new(),
            relay_dir: tempfile::tempdir().unwrap(),
        };
        for (position, name) in names.iter().enumerate() {
            network.add_host(name, position);
        }
        network
    }

    fn add_host(&mut self, name: &str, position: usize) {
        let namespace = format!("{}{name}", self.tag);
        let link = format!("{}h{position}", self.tag);
        let inner = format!("{}i{position}", self.tag);
        let address = format!("{}.{}", self.subnet, position + 2);
        ip(&["netns", "add", &namespace]);
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &namespace]);
        ip(&["link", "set", &link, "master", &self.bridge]);
        ip(&["link", "set", &link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{address}/24"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        self.hosts.push(Host {
            name: name.to_owned(),
            namespace,
            link,
            address,
            dir: tempfile::tempdir().unwrap(),
        });
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Makes this machine's service on loopback `port` reachable at the same port of
    /// `host`: a relay through a Unix socket, which namespaces share with the file system.
    fn relay(&mut self, host: &str, port: u16) {
        let socket = self.relay_dir.path().join(format!("{port}.sock"));
        let outside = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .spawn()
            .unwrap_or_else(|error| {
                panic!("these tests relay services with socat ({error}); `cargo xtask test` installs it")
            });
        self.relays.push(outside);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "socat made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let host = self.host(host);
        let inside = host
            .command("socat")
            .arg(format!(
                "TCP-LISTEN:{port},bind={},fork,reuseaddr",
                host.address
            ))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .spawn()
            .unwrap();
        let address = format!("{}:{port}", host.address);
        self.relays.push(inside);
        wait_until_reachable(self.host("services"), &address);
    }

    /// Cuts `host` off the network for `down`, then joins it again.
    fn cut(&self, host: &str, down: Duration) {
        let link = &self.host(host).link;
        ip(&["link", "set", link, "down"]);
        std::thread::sleep(down);
        ip(&["link", "set", link, "up"]);
    }

    /// What a network of this tag left behind when its test was killed.
    fn remove_leftovers(tag: &str) {
        let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&namespaces.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(tag) {
                kill_namespace(name);
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{tag}br")])
            .output();
    }
}

/// Kills every process of a namespace, then removes it (its veth pair goes with it).
fn kill_namespace(namespace: &str) {
    let pids = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let _ = Command::new("ip")
        .args(["netns", "del", namespace])
        .output();
}

impl Drop for Network {
    fn drop(&mut self) {
        for relay in &mut self.relays {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        for host in &self.hosts {
            kill_namespace(&host.namespace);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

impl Host {
    /// `program` run on this host: in its namespace, in its folder, with its own `TMPDIR`.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace, program])
            .current_dir(self.dir.path())
            .env("TMPDIR", self.dir.path())
            .env("HOME", self.dir.path());
        command
    }

    /// What is left in this host's temporary folder under `armada/` (scratch folders).
    fn scratch_leftovers(&self) -> Vec<String> {
        let root = self.dir.path().join("armada");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Waits until `address` accepts connections from `host`.
fn wait_until_reachable(host: &Host, address: &str) {
    let (ip, port) = address.split_once(':').unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let probe = host
            .command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
            .output()
            .unwrap();
        if probe.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address} is not reachable from {}",
            host.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The services, an orchestrator host and two agent hosts, with Redis, the monitor service and
/// relays to this machine's RabbitMQ running.
struct Cluster {
    network: Network,
    redis: Child,
    monitor: Child,
}

impl Cluster {
    fn start() -> Self {
        let mut network = Network::new(&["services", "orchestrator", "agents-a", "agents-b"]);
        network.relay("services", 5672);
        let redis = Self::start_redis(&network);
        let services = network.host("services");
        // The service reaches the run's backends too: its Cancel works on any of their runs.
        let mut monitor = services.command(env!("CARGO_BIN_EXE_orchestrate"));
        run_environment(&mut monitor, &services.address);
        let monitor = monitor
            .arg("serve")
            .args(["--listen", &format!("{}:{MONITOR_PORT}", services.address)])
            .args(["--token", TOKEN, "--stall-secs", &STALL_SECS.to_string()])
            .arg("--store")
            .arg(format!(
                "sqlite:{}",
                services.dir.path().join("monitor.sqlite").display()
            ))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_until_reachable(
            network.host("orchestrator"),
            &format!("{}:{MONITOR_PORT}", services.address),
        );
        Self {
            network,
            redis,
            monitor,
        }
    }

    fn start_redis(network: &Network) -> Child {
        let services = network.host("services");
        let redis = services
            .command("redis-server")
            // Reached from the other hosts only, on a network of the test's own.
            .args([
                "--bind",
                &services.address,
                "--port",
                "6379",
                "--protected-mode",
                "no",
            ])
            .args(["--appendonly", "yes", "--save", "", "--dir"])
            .arg(services.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("redis-server is needed ({error})"));
        wait_until_reachable(
            network.host("orchestrator"),
            &format!("{}:6379", services.address),
        );
        redis
    }

    /// Stops Redis (it writes its data first), waits `down`, and starts it again.
    fn restart_redis(&mut self, down: Duration) {
        let services = self.network.host("services");
        let _ = services
            .command("redis-cli")
            .args(["-h", &services.address, "shutdown"])
            .output();
        self.redis.wait().unwrap();
        std::thread::sleep(down);
        self.redis = Self::start_redis(&self.network);
    }

    fn services_address(&self) -> &str {
        &self.network.host("services").address
    }

    /// `orchestrate` with these arguments on `host`.
    fn orchestrate(&self, host: &str, args: &[&str]) -> Command {
        let mut command = self
            .network
            .host(host)
            .command(env!("CARGO_BIN_EXE_orchestrate"));
        command.args(args);
        run_environment(&mut command, self.services_address());
        command
    }

    /// A copy of the hello project on the orchestrator host.
    fn project(&self, work_ms: u64) -> PathBuf {
        let dir = self.network.host("orchestrator").dir.path().join("project");
        let config = dir.join("config");
        std::fs::create_dir_all(&config).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut template: Value = serde_json::from_str(
            &std::fs::read_to_string(source.join("config_template.json")).unwrap(),
        )
        .unwrap();
        template["default_job_message"]["work_ms"] = json!(work_ms);
        std::fs::write(config.join("config_template.json"), template.to_string()).unwrap();
        std::fs::write(
            config.join("config_local.json"),
            json!({ "DEFAULT_NUMBER": 27 }).to_string(),
        )
        .unwrap();
        dir
    }

    /// Where the launcher writes its results, on the orchestrator host.
    fn launcher_results(&self) -> PathBuf {
        self.network
            .host("orchestrator")
            .dir
            .path()
            .join("project/results.jsonl")
    }

    /// Launches a run of `jobs` on the orchestrator host whose 4 agents run 2 on each agent
    /// host; returns the launcher, its run id and the agents.
    fn launch(&self, jobs: u64, work_ms: u64) -> (Child, String, Vec<Child>) {
        let project = self.project(work_ms);
        let mut launcher = self
            .orchestrate("orchestrator", &["launch", "--agents-as", "external"])
            .arg("--project")
            .arg(&project)
            .args(["--agents", "4", "--jobs", &jobs.to_string(), "--output"])
            .arg(self.launcher_results())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(launcher.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let run_id = first
            .strip_prefix("run ")
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("no run id in {first:?}"))
            .to_owned();
        let agents = (0..4)
            .map(|index| {
                let host = if index < 2 { "agents-a" } else { "agents-b" };
                self.orchestrate(host, &["agent", "--run-id", &run_id])
                    .args(["--index", &index.to_string()])
                    .spawn()
                    .unwrap()
            })
            .collect();
        (launcher, run_id, agents)
    }

    /// The run as the monitor service shows it.
    fn monitored_run(&self, run_id: &str) -> Value {
        let (_, text) = self.monitor_request(reqwest::Method::GET, &format!("/runs/{run_id}"));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
    }

    /// A request to the monitor service's API: its status and body.
    fn monitor_request(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let url = format!(
            "http://{}:{MONITOR_PORT}/api/v1{path}",
            self.services_address()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .request(method, url)
                .bearer_auth(TOKEN)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    }

    /// A field of the run's state in Redis.
    fn store_state(&self, run_id: &str, field: &str) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", self.services_address()])
            .args(["HGET", &format!("armada:run:{run_id}:state"), field])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Keys of the run in Redis beyond its finished record, and its queues in RabbitMQ.
    fn leftovers(&self, run_id: &str) -> (Vec<String>, Vec<String>) {
        let keys = Command::new("redis-cli")
            .args(["-h", self.services_address(), "--scan", "--pattern"])
            .arg(format!("armada:run:{run_id}:*"))
            .output()
            .unwrap();
        let kept = ["record", "state", "recorded", "results", "finished"]
            .map(|suffix| format!("armada:run:{run_id}:{suffix}"));
        let keys = String::from_utf8_lossy(&keys.stdout)
            .lines()
            .filter(|key| !kept.iter().any(|kept| kept == key))
            .map(str::to_owned)
            .collect();
        let queues = Command::new("rabbitmqctl")
            .args(["list_queues", "--quiet", "name"])
            .output()
            .unwrap();
        let queues = String::from_utf8_lossy(&queues.stdout)
            .lines()
            .filter(|name| {
                *name == format!("armada.{run_id}.jobs") || *name == format!("armada.{run_id}.dead")
            })
            .map(str::to_owned)
            .collect();
        (keys, queues)
    }

    fn scratch_leftovers(&self) -> Vec<String> {
        self.network
            .hosts
            .iter()
            .flat_map(|host| {
                host.scratch_leftovers()
                    .into_iter()
                    .map(|left| format!("{}: {left}", host.name))
            })
            .collect()
    }
}

/// The URLs every process of a run is given, as environment variables: the services host's.
fn run_environment(command: &mut Command, services: &str) {
    command
        .env(
            "ARMADA_QUEUE_URL",
            format!("amqp://guest:guest@{services}:5672/%2f"),
        )
        .env("ARMADA_STORE_URL", format!("redis://{services}:6379"))
        .env(
            "ARMADA_MONITOR_URL",
            format!("http://{services}:{MONITOR_PORT}"),
        )
        .env("ARMADA_MONITOR_TOKEN", TOKEN);
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.redis.kill();
        let _ = self.monitor.wait();
        let _ = self.redis.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn indexes(results: &[Value]) -> BTreeSet<u64> {
    results
        .iter()
        .map(|result| result["index"].as_u64().unwrap())
        .collect()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_outlives_its_killed_launcher_and_attach_on_another_host_writes_every_result_once() {
    let cluster = Cluster::start();
    let (mut launcher, run_id, mut agents) = cluster.launch(500, 20);
    let written = cluster.launcher_results();
    wait_for("a third of the results", Duration::from_secs(120), || {
        results_lines(&written) >= 170
    });
    launcher.kill().unwrap(); // SIGKILL
    launcher.wait().unwrap();
    assert!(results_lines(&written) < 500, "the launcher finished first");

    // No process follows the run: its agents end it, in the store and in the monitor.
    wait_for(
        "the store to say completed",
        Duration::from_secs(120),
        || cluster.store_state(&run_id, "status") == "completed",
    );
    wait_for(
        "the monitor to say completed",
        Duration::from_secs(30),
        || cluster.monitored_run(&run_id)["status"] == "completed",
    );
    for agent in &mut agents {
        assert!(wait_exit(agent, Duration::from_secs(30)).success());
    }

    let output = cluster
        .network
        .host("agents-b")
        .dir
        .path()
        .join("results.jsonl");
    let attach = || {
        let status = cluster
            .orchestrate("agents-b", &["attach", &run_id, "--output"])
            .arg(&output)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0));
        results(&output)
    };
    let attached = attach();
    assert_eq!(attached.len(), 500, "exactly one line per job");
    assert_eq!(indexes(&attached), (0..500).collect());
    assert!(
        attached
            .iter()
            .all(|result| result["status"] == "succeeded")
    );
    assert_eq!(attach(), attached, "attaching again changes nothing");
    assert_eq!(cluster.leftovers(&run_id), (Vec::new(), Vec::new()));
    assert_eq!(cluster.scratch_leftovers(), Vec::<String>::new());
}

fn results_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[test]
fn an_agent_host_cut_off_for_20_s_and_a_redis_restart_lose_and_duplicate_nothing() {
    let mut cluster = Cluster::start();
    for fault in ["cut", "redis"] {
        let (mut launcher, run_id, mut agents) = cluster.launch(240, 50);
        let written = cluster.launcher_results();
        wait_for("the first results", Duration::from_secs(60), || {
            results_lines(&written) >= 30
        });
        match fault {
            "cut" => cluster.network.cut("agents-a", Duration::from_secs(20)),
            _ => cluster.restart_redis(Duration::from_secs(3)),
        }
        let status = wait_exit(&mut launcher, Duration::from_secs(240));
        assert!(status.success(), "{fault}: {status}");
        let done = results(&written);
        assert_eq!(done.len(), 240, "{fault}: each job exactly once");
        assert_eq!(indexes(&done), (0..240).collect());
        assert!(
            done.iter().all(|result| result["status"] == "succeeded"),
            "{fault}"
        );
        for agent in &mut agents {
            assert!(
                wait_exit(agent, Duration::from_secs(90)).success(),
                "{fault}"
            );
        }
        assert_eq!(
            cluster.leftovers(&run_id),
            (Vec::new(), Vec::new()),
            "{fault}"
        );
        std::fs::remove_file(&written).unwrap();
    }
}

#[test]
fn a_run_whose_every_process_was_killed_shows_stalled() {
    let cluster = Cluster::start();
    let (mut launcher, run_id, mut agents) = cluster.launch(40, 2_000);
    wait_for("the agents to be busy", Duration::from_secs(60), || {
        cluster.monitored_run(&run_id)["counts"]["running"].as_u64() >= Some(1)
    });
    assert_eq!(cluster.monitored_run(&run_id)["status"], "running");
    for process in agents.iter_mut().chain([&mut launcher]) {
        process.kill().unwrap();
        process.wait().unwrap();
    }
    wait_for(
        "the monitor to say stalled",
        Duration::from_secs(STALL_SECS + 10),
        || cluster.monitored_run(&run_id)["status"] == "stalled",
    );
    let run = cluster.monitored_run(&run_id);
    let reason = run["stalled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("heard from"), "{run}");
    let agents = cluster.monitor_request(reqwest::Method::GET, &format!("/runs/{run_id}/agents"));
    assert!(agents.1.contains("\"gone\""), "{agents:?}");

    // The monitor service cancels it through the store, though no process of it is left.
    let (status, body) =
        cluster.monitor_request(reqwest::Method::POST, &format!("/runs/{run_id}/cancel"));
    assert_eq!(status, 202, "{body}");
    wait_for(
        "the monitor to say canceled",
        Duration::from_secs(40),
        || cluster.monitored_run(&run_id)["status"] == "canceled",
    );
    assert_eq!(cluster.store_state(&run_id, "status"), "canceled");
    let run = cluster.monitored_run(&run_id);
    assert_eq!(
        run["counts"]["canceled"].as_u64().unwrap() + done(&run),
        40,
        "{run}"
    );
    assert_eq!(cluster.leftovers(&run_id), (Vec::new(), Vec::new()));
    // Canceling it again is refused with how it ended.
    let (status, body) =
        cluster.monitor_request(reqwest::Method::POST, &format!("/runs/{run_id}/cancel"));
    assert_eq!(status, 409, "{body}");
}

/// Jobs of a monitored run that succeeded or failed.
fn done(run: &Value) -> u64 {
    run["counts"]["succeeded"].as_u64().unwrap() + run["counts"]["failed"].as_u64().unwrap()
}

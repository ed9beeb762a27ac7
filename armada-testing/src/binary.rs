//! A project's binary as a user runs it, for tests that start it as a process.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The variables that point a project's binary at shared backends, a monitor or a display:
/// a test decides them, not the environment it happens to run in.
const INHERITED: [&str; 9] = [
    "ARMADA_QUEUE_URL",
    "ARMADA_STORE_URL",
    "ARMADA_AMQP_URL",
    "ARMADA_REDIS_URL",
    "ARMADA_MONITOR_URL",
    "ARMADA_MONITOR_STORE",
    "ARMADA_MONITOR_TOKEN",
    "ARMADA_OUTAGE_SECS",
    "DISPLAY",
];

/// The binary at `program` (a test's `env!("CARGO_BIN_EXE_…")`) without the caller's backend,
/// monitor and display variables.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for variable in INHERITED {
        command.env_remove(variable);
    }
    command
}

/// A copy of a project's `config/` in a temporary folder, removed when dropped: a test changes
/// it without touching the project.
#[derive(Debug)]
pub struct ProjectCopy {
    dir: tempfile::TempDir,
}

impl ProjectCopy {
    /// Copies every file of `project/config`.
    pub fn of(project: &Path) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = dir.path().join("config");
        std::fs::create_dir(&config).expect("the copy's config folder");
        let source = project.join("config");
        let entries = std::fs::read_dir(&source)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", source.display()));
        for entry in entries {
            let entry = entry.expect("a config entry");
            std::fs::copy(entry.path(), config.join(entry.file_name()))
                .unwrap_or_else(|error| panic!("cannot copy {:?}: {error}", entry.path()));
        }
        Self { dir }
    }

    /// The copy's folder, to pass as `--project`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes `config/config_template.json` as JSON.
    pub fn edit_template(&self, edit: impl FnOnce(&mut Value)) -> &Self {
        let path = self.config_file("config_template.json");
        let text = std::fs::read_to_string(&path).expect("the copy's template");
        let mut template: Value = serde_json::from_str(&text).expect("the template is JSON");
        edit(&mut template);
        self.write("config_template.json", &template.to_string())
    }

    /// Writes `config/<file>`.
    pub fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.config_file(file), text)
            .unwrap_or_else(|error| panic!("cannot write config/{file}: {error}"));
        self
    }

    /// Removes `config/<file>`.
    pub fn remove(&self, file: &str) -> &Self {
        std::fs::remove_file(self.config_file(file))
            .unwrap_or_else(|error| panic!("cannot remove config/{file}: {error}"));
        self
    }

    fn config_file(&self, file: &str) -> PathBuf {
        self.dir.path().join("config").join(file)
    }
}

/// A `launch` followed from the background: its run id and dashboard are read from its first
/// lines, its stderr is echoed and kept, and it is killed if dropped before it ends.
#[derive(Debug)]
pub struct Launch {
    child: Child,
    run_id: String,
    dashboard: Option<String>,
    results: PathBuf,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a [`Launch`] ended.
#[derive(Debug)]
pub struct Finished {
    /// The process's exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it and its agent processes printed on stderr.
    pub stderr: String,
    /// The results file's lines, in order.
    pub results: Vec<Value>,
}

impl Launch {
    /// Starts `command` (a `launch` whose results go to `results`) and reads its run id.
    pub fn start(mut command: Command, results: &Path) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let stderr = echo(child.stderr.take().expect("a piped stderr"));
        let mut stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("the launch's first line");
        let run_id = first
            .strip_prefix("run ")
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("no run id in {first:?}"))
            .to_owned();
        let mut second = String::new();
        stdout
            .read_line(&mut second)
            .expect("the launch's second line");
        let dashboard = second
            .strip_prefix("dashboard: http://")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned);
        let stdout = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            first + &second + &rest
        });
        Self {
            child,
            run_id,
            dashboard,
            results: results.to_path_buf(),
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The launch's dashboard, `127.0.0.1:PORT`, when it serves one.
    pub fn dashboard(&self) -> Option<&str> {
        self.dashboard.as_deref()
    }

    /// The launch process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The launch process, to kill or wait for.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Where the launch writes its results.
    pub fn results_file(&self) -> &Path {
        &self.results
    }

    /// The results file's lines so far.
    pub fn results(&self) -> Vec<Value> {
        read_results(&self.results)
    }

    /// Waits until the results file has `count` lines; panics after `limit`.
    pub fn wait_for_results(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.results().len() < count {
            assert!(
                Instant::now() < deadline,
                "the run did not get to {count} results in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the launch to end (it is killed, and the test fails, after `limit`).
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the launch's status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the run did not end in {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let joined = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|handle| handle.join().unwrap_or_default())
                .unwrap_or_default()
        };
        Finished {
            status,
            stdout: joined(self.stdout.take()),
            stderr: joined(self.stderr.take()),
            results: read_results(&self.results),
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // A failed test must not leave its run going.
        let _ = self.child.kill();
    }
}

/// A memory figure of process `pid` from `/proc/PID/status`, in kB: `VmRSS` now, `VmHWM` its
/// peak.
pub fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("cannot read process {pid}'s status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// What [`http_get`] read.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status line, `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The body, as text.
    pub body: String,
    /// From connecting to the end of the answer.
    pub elapsed: Duration,
}

impl HttpAnswer {
    /// The body read as JSON; panics, with the answer, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("{error} in the answer {self:?}"))
    }
}

/// `GET path` on a server at `address` (`127.0.0.1:PORT`), as plain HTTP/1.1 with no client
/// library: a test that measures how long a busy process takes to answer wants nothing in
/// between. Gives up reading after 10 s.
pub fn http_get(address: &str, path: &str) -> HttpAnswer {
    use std::io::Write;

    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|error| panic!("no answer to GET {path}: {error}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    HttpAnswer {
        status_line: head.lines().next().unwrap_or_default().to_owned(),
        body: body.to_owned(),
        elapsed: started.elapsed(),
    }
}

/// The `http://` URL a server started with piped stdout announces on its first line, without
/// a trailing slash.
pub fn announced_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("the server's stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints a line");
    line.split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_owned()
}

/// How a job's second attempt started, as a launch's dashboard API shows it.
#[derive(Debug)]
pub struct RetryStart {
    /// From the end of the retry's delay (counted from the `retrying` event of attempt 1) to
    /// the `job_started` event of attempt 2, in the agents' clock.
    pub late_ms: i64,
    /// The run's queued jobs just after that start: what the retry went ahead of.
    pub queued: u64,
}

/// Waits up to `limit` for job `job` of run `run_id` to start its second attempt, reading
/// its events from the dashboard at `address`.
pub fn retry_start(address: &str, run_id: &str, job: u64, limit: Duration) -> RetryStart {
    let deadline = Instant::now() + limit;
    let events_path = format!("/api/v1/runs/{run_id}/jobs/{job}/events?limit=100");
    loop {
        let answer = http_get(address, &events_path).json();
        let events = answer["events"].as_array().cloned().unwrap_or_default();
        let find = |kind: &str, attempt: u32| {
            events
                .iter()
                .find(|event| event["kind"] == kind && event["attempt"] == attempt)
        };
        if let (Some(retrying), Some(second)) = (find("retrying", 1), find("job_started", 2)) {
            let run = http_get(address, &format!("/api/v1/runs/{run_id}")).json();
            let at = |event: &Value| event["at_ms"].as_i64().expect("an event time");
            let delay = retrying["data"]["delay_ms"]
                .as_i64()
                .expect("a retry delay");
            return RetryStart {
                late_ms: at(second) - (at(retrying) + delay),
                queued: run["counts"]["queued"].as_u64().expect("a queued count"),
            };
        }
        assert!(
            Instant::now() < deadline,
            "job {job} started no second attempt within {limit:?}: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Echoes a child's stderr as it comes, and keeps it.
fn echo(stderr: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            kept.push_str(&line);
            kept.push('\n');
        }
        kept
    })
}

fn read_results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("a results line is not JSON ({error}): {line}"))
        })
        .collect()
}

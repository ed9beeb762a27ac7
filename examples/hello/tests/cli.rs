//! The hello project's binary, as a user runs it.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use armada::testing::binary::{self, Launch, ProjectCopy};
use serde_json::Value;

/// The project's binary with `args`, in `cwd`, with no shared backends from the environment.
fn command(args: &[&str], cwd: &Path) -> Command {
    let mut command = binary::command(env!("CARGO_BIN_EXE_orchestrate"));
    command.args(args).current_dir(cwd);
    command
}

fn orchestrate(args: &[&str], cwd: &Path) -> Output {
    command(args, cwd).output().expect("the binary runs")
}

/// A copy of the hello project without its `data_job.csv`, which the test writes; returns the
/// copy and its `config` folder.
fn project_without_jobs() -> (ProjectCopy, std::path::PathBuf) {
    let copy = ProjectCopy::of(project());
    copy.remove("data_job.csv").remove("config_distant.json");
    let config = copy.path().join("config");
    (copy, config)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn launch_writes_one_result_line_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let output = orchestrate(
        &[
            "launch", "--agents", "3", "--jobs", "50", "--output", "r.jsonl",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Plain progress lines (stdout is a pipe) say the agents start, and never repeat a line.
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("progress: starting the agents…"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "backends: queue memory:// (default), config store memory:// (default); agents as \
             tasks (the default with in-memory backends)"
        ),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("progress: "))
        .collect();
    assert!(
        lines
            .windows(2)
            .all(|pair| pair[0].split("  ").next() != pair[1].split("  ").next()),
        "{stdout}"
    );
    let results: Vec<Value> = std::fs::read_to_string(dir.path().join("r.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let indexes: BTreeSet<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(results.len(), 50);
    assert_eq!(indexes, (0..50).collect());
    for result in &results {
        assert_eq!(result["status"], "succeeded");
        assert!(result["agent"].as_u64().unwrap() < 3);
    }
    let job = |index: u64| results.iter().find(|r| r["index"] == index).unwrap();
    // Row 2 of data_job.csv: number 19 plus the job index.
    assert_eq!(job(2)["output"]["start"], 21);
    assert_eq!(job(2)["output"]["steps"], 7);
    // No row: the default number comes from config_local.json ($env_DEFAULT_NUMBER = 27).
    assert_eq!(job(10)["output"]["start"], 37);
    // Jobs marked flaky, and every tenth from 3, succeed on their second attempt.
    assert_eq!(job(1)["attempts"], 2);
    assert_eq!(job(13)["attempts"], 2);
    assert_eq!(job(0)["attempts"], 1);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("succeeded     50"), "{stdout}");
}

#[test]
fn the_distant_tune_changes_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let output = orchestrate(&["plan", "--tune", "distant", "--jobs", "8"], dir.path());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4 + 8);
    assert_eq!(lines[4 + 7]["message"]["number"], 97);
    assert_eq!(lines[1]["message"]["style"]["uppercase"], true);
    assert_eq!(lines[2]["message"]["style"]["suffix"], " :)");
    assert_eq!(lines[2]["message"]["style"]["uppercase"], false);
}

#[test]
fn bad_input_is_reported_whole_and_nothing_runs() {
    let (dir, config) = project_without_jobs();
    // The same lines whatever ends them (Windows tools write CRLF).
    for newline in ["\n", "\r\n"] {
        let rows = [
            "targetted_job,name,number",
            "0,Ada,seven",
            "1,Bob,{oops",
            "x,Eve,3",
            "200,Zed,4",
            "",
        ];
        std::fs::write(config.join("data_job.csv"), rows.join(newline)).unwrap();
        let output = orchestrate(&["launch", "--output", "r.jsonl"], dir.path());
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert!(stderr.contains("4 problems"), "{stderr}");
        assert!(
        stderr.contains(
            "data_job.csv:2: field `number`: job 0: invalid type: string \"seven\", expected u64"
        ),
        "{stderr}"
    );
        assert!(
            stderr.contains("data_job.csv:3:3: field `number`: the cell starts like JSON"),
            "{stderr}"
        );
        assert!(
            stderr.contains("data_job.csv:4:1: field `targetted_job`: `x` is not an index"),
            "{stderr}"
        );
        assert!(
            stderr.contains("data_job.csv:5:1: field `targetted_job`: job 200 is out of range"),
            "{stderr}"
        );
    }
    assert!(
        !dir.path().join("r.jsonl").exists(),
        "nothing may be written"
    );
    assert!(
        !dir.path().join(".armada").exists(),
        "nothing may be written"
    );
}

#[test]
fn an_unreachable_broker_is_a_clear_error_that_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let output = orchestrate(
        &[
            "launch",
            "--queue",
            "amqp://guest:hunter2@127.0.0.1:1/%2f",
            "--config-store",
            "memory://",
            "--output",
            "r.jsonl",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        !dir.path().join("r.jsonl").exists(),
        "nothing may be written"
    );
}

#[test]
fn an_unknown_backend_scheme_lists_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output = orchestrate(
        &["launch", "--config-store", "etcd://127.0.0.1"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("memory://, redis://, rediss://"),
        "{stderr}"
    );
}

#[test]
fn the_agent_subcommand_refuses_in_memory_backends() {
    let dir = tempfile::tempdir().unwrap();
    let output = orchestrate(&["agent", "--run-id", "r1", "--index", "0"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("shared backends"));
}

#[test]
fn the_dashboard_of_a_launch_cancels_its_run() {
    use std::io::{BufRead, BufReader, Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args(["launch", "--agents", "4", "--jobs", "400", "--project"])
        .arg(project())
        .args(["--monitor"])
        .arg(format!("sqlite:{}", dir.path().join("m.sqlite").display()))
        .args(["--output"])
        .arg(dir.path().join("r.jsonl"))
        .env_remove("ARMADA_QUEUE_URL")
        .env_remove("ARMADA_STORE_URL")
        .env_remove("ARMADA_AMQP_URL")
        .env_remove("ARMADA_REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let run_id = first.split([' ', ':']).nth(1).unwrap().to_owned();
    let mut second = String::new();
    stdout.read_line(&mut second).unwrap();
    let address = second
        .strip_prefix("dashboard: http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no dashboard in {second:?}"))
        .to_owned();
    let post = |path: &str| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    // Another run cannot be canceled from here; this one can.
    let other = post("/api/v1/runs/not-this-run/cancel");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let response = post(&format!("/api/v1/runs/{run_id}/cancel"));
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
}

/// `launch` of the hello project with `args`, its monitor and results in `dir`; started and
/// its first lines read.
fn launch_in(dir: &Path, args: &[&str]) -> Launch {
    let results = dir.join("r.jsonl");
    let mut command = command(&[&["launch"], args].concat(), project());
    command
        .arg("--monitor")
        .arg(format!("sqlite:{}", dir.join("m.sqlite").display()))
        .arg("--output")
        .arg(&results)
        // The agents' scratch folders go with the test's folder, however the run ends.
        .env("TMPDIR", dir);
    Launch::start(command, &results)
}

#[test]
fn a_retry_starts_on_time_ahead_of_two_thousand_queued_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let copy = ProjectCopy::of(project());
    // Job 3 fails its first attempt on purpose; its retry waits 500 ms, while 2,000 jobs of
    // 10 ms on 2 agents take seconds.
    copy.edit_template(|template| {
        template["run_message"]["retry_backoff_secs"] = serde_json::json!(0.5);
        template["default_job_message"]["work_ms"] = serde_json::json!(10);
    });
    let results = dir.path().join("r.jsonl");
    let mut command = command(&["launch", "--agents", "2", "--jobs", "2000"], copy.path());
    command
        .arg("--monitor")
        .arg(format!("sqlite:{}", dir.path().join("m.sqlite").display()))
        .arg("--output")
        .arg(&results);
    let launch = Launch::start(command, &results);
    let dashboard = launch.dashboard().unwrap().to_owned();
    let retry = binary::retry_start(
        &dashboard,
        launch.run_id(),
        3,
        std::time::Duration::from_secs(60),
    );
    // The acceptance's bound; `cargo xtask bench` measures the lateness itself.
    assert!(retry.late_ms < 2_000, "{retry:?}");
    assert!(retry.queued >= 1_000, "{retry:?}");
    let finished = launch.finish(std::time::Duration::from_secs(120));
    assert_eq!(finished.status.code(), Some(0), "{}", finished.stdout);
    assert_eq!(finished.results.len(), 2_000);
}

#[test]
fn a_hundred_million_jobs_start_at_once_and_memory_does_not_grow_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let launch = launch_in(dir.path(), &["--agents", "2", "--jobs", "100000000"]);
    let dashboard = launch.dashboard().unwrap().to_owned();
    // Bounded, so that a launch that never starts fails here rather than hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let run = loop {
        let run = binary::http_get(&dashboard, &format!("/api/v1/runs/{}", launch.run_id())).json();
        if run["counts"]["succeeded"].as_u64().unwrap() >= 200 {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "no job ran: {run}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let peak_kb = binary::memory_kb(launch.pid(), "VmHWM");
    drop(launch);
    assert_eq!(run["jobs"].as_u64(), Some(100_000_000), "{run}");
    let queued = run["counts"]["queued"].as_u64().unwrap();
    assert!(
        queued > 99_999_000,
        "the jobs not started count as queued: {run}"
    );
    assert!(
        peak_kb < 200 * 1024,
        "a run of 10^8 jobs peaked at {peak_kb} kB of RSS"
    );
}

/// Opens the dashboard's live feed on `address` with a bare WebSocket handshake; the feed
/// stays subscribed while the returned stream is open.
fn open_live_feed(address: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};

    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /api/v1/ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = text(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

#[test]
fn a_launch_says_where_its_run_lives_and_keeps_its_dashboard_while_a_tab_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut launch = launch_in(
        dir.path(),
        &[
            "--agents",
            "2",
            "--jobs",
            "20",
            "--keep-dashboard",
            "--name",
            "smoke run",
            "--tag",
            "ci",
            "--tag",
            "smoke",
        ],
    );
    let dashboard = launch.dashboard().unwrap().to_owned();
    let run_id = launch.run_id().to_owned();
    let tab = open_live_feed(&dashboard);
    let about = binary::http_get(&dashboard, "/api/v1/about").json();
    assert_eq!(about["serves"], "launch", "{about}");
    assert_eq!(about["run_id"], run_id.as_str(), "{about}");
    let command = about["later"]["command"].as_str().unwrap();
    assert!(command.contains(" serve --project "), "{about}");
    assert!(command.contains(" --monitor sqlite:"), "{about}");
    assert_eq!(
        about["later"]["url"],
        format!("http://127.0.0.1:8400/#/runs/{run_id}").as_str()
    );
    // Bounded, so that a run that never ends fails here rather than hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = binary::http_get(&dashboard, &format!("/api/v1/runs/{run_id}")).json();
        if run["status"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not end: {run}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let run = binary::http_get(&dashboard, &format!("/api/v1/runs/{run_id}")).json();
    assert_eq!(
        (&run["name"], &run["tags"]),
        (
            &serde_json::json!("smoke run"),
            &serde_json::json!(["ci", "smoke"])
        )
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        launch.child().try_wait().unwrap().is_none(),
        "the launch ended with a tab open on its dashboard"
    );
    drop(tab);
    let finished = launch.finish(std::time::Duration::from_secs(30));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(finished.results.len(), 20);
    assert!(
        finished.stdout.contains(&format!(
            "see this run later: `{command}`, then http://127.0.0.1:8400/#/runs/{run_id}"
        )),
        "{}",
        finished.stdout
    );
    // The command it gave serves the run, with what its charts draw (on a free port, as
    // tests run side by side).
    let served = ServedLater::start(command);
    let run = binary::http_get(&served.address, &format!("/api/v1/runs/{run_id}")).json();
    assert_eq!(
        (&run["status"], &run["name"]),
        (
            &serde_json::json!("completed"),
            &serde_json::json!("smoke run")
        ),
        "{run}"
    );
    let timeline =
        binary::http_get(&served.address, &format!("/api/v1/runs/{run_id}/timeline")).json();
    let buckets = timeline["buckets"].as_array().unwrap();
    let succeeded: u64 = buckets
        .iter()
        .map(|bucket| bucket["succeeded"].as_u64().unwrap())
        .sum();
    assert_eq!(succeeded, 20, "{timeline}");
    let bars: u64 = timeline["durations"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|count| count.as_u64().unwrap())
        .sum();
    assert_eq!(bars, 20, "{timeline}");
}

/// The `serve` command a launch printed, run on a free port; stopped when dropped.
struct ServedLater {
    child: std::process::Child,
    address: String,
}

impl ServedLater {
    fn start(command: &str) -> Self {
        let mut words = command.split_whitespace();
        let program = words.next().unwrap();
        let mut child = binary::command(program)
            .args(words)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let url = binary::announced_url(&mut child);
        let address = url.trim_start_matches("http://").to_owned();
        Self { child, address }
    }
}

impl Drop for ServedLater {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_to_a_file_or_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(
        &[
            "launch", "--agents", "3", "--jobs", "50", "--output", "r.jsonl",
        ],
        dir.path(),
    )
    .env("RUST_LOG", "debug,lapin=off")
    .output()
    .expect("the binary runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("DEBUG"),
        "the run logged at debug: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
}

#[test]
fn a_command_line_that_does_not_parse_exits_64_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let output = orchestrate(&["launch", "--agentz", "3"], dir.path());
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("--agentz"),
        "{}",
        text(&output.stderr)
    );
    let output = orchestrate(&["launch", "--help"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("--agents"));
}

#[test]
fn a_launch_that_fails_leaves_no_results_file_and_an_old_one_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Agent processes need shared backends: this launch fails before anything is published.
    let args = ["launch", "--agents-as", "processes", "--output", "r.jsonl"];
    let output = orchestrate(&args, dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        !dir.path().join("r.jsonl").exists(),
        "a results file was left behind"
    );
    std::fs::write(dir.path().join("r.jsonl"), "an earlier run's line\n").unwrap();
    let output = orchestrate(&args, dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap(),
        "an earlier run's line\n"
    );
}

#[test]
fn flags_out_of_range_are_blamed_on_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--agents", "0"),
        ("--max-attempts", "0"),
        ("--jobs", "0"),
        ("--job-timeout-secs", "nan"),
        ("--grace-secs", "nan"),
        ("--grace-secs", "-1"),
        ("--tag", "two words"),
        ("--name", " "),
    ] {
        let flag_and_value = format!("{flag}={value}");
        let output = orchestrate(
            &["launch", &flag_and_value, "--output", "r.jsonl"],
            dir.path(),
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(
            !stderr.contains("config_template.json"),
            "{flag} {value}: {stderr}"
        );
        assert!(!dir.path().join("r.jsonl").exists());
    }
}

#[test]
fn headers_with_spaces_or_twice_are_errors_naming_the_column() {
    let (dir, config) = project_without_jobs();
    for (csv, expected) in [
        (
            "targetted_job, name\n0,Ada\n",
            "data_job.csv:1:2: header ` name` has spaces around it",
        ),
        (
            "targetted_job,name,name\n0,Ada,Bob\n",
            "data_job.csv:1:3: header `name` is in columns 2 and 3",
        ),
    ] {
        std::fs::write(config.join("data_job.csv"), csv).unwrap();
        let output = orchestrate(&["launch", "--output", "r.jsonl"], dir.path());
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!dir.path().join("r.jsonl").exists());
    }
}

/// A column or template key the script's types never read is an error naming where it was
/// written and the key meant: before, every job silently ran with the default.
#[test]
fn keys_nothing_reads_are_errors_with_the_key_meant() {
    let (dir, config) = project_without_jobs();
    std::fs::write(
        config.join("data_job.csv"),
        "targetted_job,nmae\n0,Ada\n1,Bob\n",
    )
    .unwrap();
    let output = orchestrate(&["launch", "--output", "r.jsonl"], dir.path());
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "data_job.csv:1:2: field `nmae`: `nmae` is not a field of the job payload; did you \
             mean `name`?"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("nmae").count(), 2, "reported once: {stderr}");
    assert!(!dir.path().join("r.jsonl").exists());
    assert!(!dir.path().join(".armada").exists());

    std::fs::write(config.join("data_job.csv"), "targetted_job,name\n0,Ada\n").unwrap();
    let template = std::fs::read_to_string(config.join("config_template.json")).unwrap();
    let template = template.replace("\"work_ms\"", "\"wrok_ms\"");
    std::fs::write(config.join("config_template.json"), template).unwrap();
    let output = orchestrate(&["validate"], dir.path());
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "field `default_job_message.wrok_ms`: `wrok_ms` is not a field of the job \
             payload; did you mean `work_ms`?"
        ),
        "{stderr}"
    );
}

#[test]
fn a_quote_never_closed_is_an_error_and_quoted_cells_still_read() {
    let (dir, config) = project_without_jobs();
    let unclosed = "targetted_job,name\n0,Ada\n1,\"unterminated\n2,Bob\n3,Eve\n";
    std::fs::write(config.join("data_job.csv"), unclosed).unwrap();
    let output = orchestrate(&["validate"], dir.path());
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("data_job.csv:3: a quoted cell opened here is never closed"),
        "{stderr}"
    );
    // A cell quoted over two lines, a doubled quote, and a quote inside an unquoted cell.
    let fine =
        "targetted_job,name\n0,\"Ada\nLovelace\"\n1,\"Bob \"\"the\"\" Builder\"\n2,12\" pizza\n";
    std::fs::write(config.join("data_job.csv"), fine).unwrap();
    let output = orchestrate(&["validate"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn fewer_jobs_than_csv_rows_runs_the_first_ones_and_says_what_it_skipped() {
    let (dir, config) = project_without_jobs();
    let rows: String = (0..100).map(|job| format!("{job},Name{job}\n")).collect();
    std::fs::write(
        config.join("data_job.csv"),
        format!("targetted_job,name\n{rows}"),
    )
    .unwrap();
    let output = orchestrate(
        &["launch", "--jobs", "40", "--output", "r.jsonl"],
        dir.path(),
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("skipped 60 rows of data_job.csv: they target indexes 40 and above"),
        "{stdout}"
    );
    let results = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 40);
    // Without the flag, the run's own count holds and rows beyond it stay errors.
    let template = std::fs::read_to_string(config.join("config_template.json")).unwrap();
    let mut template: Value = serde_json::from_str(&template).unwrap();
    template["run_message"]["jobs"] = serde_json::json!(40);
    std::fs::write(config.join("config_template.json"), template.to_string()).unwrap();
    let output = orchestrate(&["validate"], dir.path());
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("job 40 is out of range"), "{stderr}");
    assert!(
        stderr.contains("10 more rows target jobs out of range"),
        "{stderr}"
    );
}

/// The API key every agent gets from the template, and the one agent 1 gets from its CSV row.
const KEY: &str = "sk-live-7f3a9c1e5b";
const AGENT_KEY: &str = "agent-1-key-42d8e0";

/// A copy of hello whose agents have API keys: a `Secret` field of their config.
fn project_with_keys() -> ProjectCopy {
    let copy = ProjectCopy::of(project());
    copy.edit_template(|template| template["default_agent_message"]["api_key"] = KEY.into())
        .write(
            "data_agent.csv",
            &format!("targetted_agent,greeting,api_key\n1,Bonjour,{AGENT_KEY}\n"),
        );
    copy
}

fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(KEY) && !text.contains(AGENT_KEY),
        "{what} shows a secret: {text}"
    );
}

/// A `Secret` reaches its agent and shows `***` in the plan, the output, the logs, the results
/// file and the monitor's store, even when the script itself reports it.
#[test]
fn secrets_reach_the_agent_and_nothing_else() {
    let copy = project_with_keys();
    let plan = orchestrate(&["plan", "--agents", "2", "--jobs", "4"], copy.path());
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert_hidden("the plan", &text(&plan.stdout));
    assert!(text(&plan.stdout).contains("\"api_key\":\"***\""));

    let mut launch = command(
        &[
            "launch",
            "--agents",
            "2",
            "--jobs",
            "4",
            "--output",
            "r.jsonl",
            "--no-dashboard",
        ],
        copy.path(),
    );
    let output = launch.env("RUST_LOG", "debug").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_hidden("launch's output", &text(&output.stdout));
    assert_hidden("launch's logs", &text(&output.stderr));
    let results = std::fs::read_to_string(copy.path().join("r.jsonl")).unwrap();
    assert_hidden("the results file", &results);
    for line in results.lines() {
        let result: Value = serde_json::from_str(line).unwrap();
        let expected = if result["agent"] == 1 { AGENT_KEY } else { KEY };
        assert_eq!(result["output"]["key_chars"], expected.len(), "{result}");
    }
    let store = std::fs::read_dir(copy.path().join(".armada"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned())
        .collect::<String>();
    assert!(
        store.contains("checked with key ***"),
        "the script's event was stored"
    );
    assert_hidden("the monitor's store", &store);
}

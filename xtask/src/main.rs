//! Project automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `demo`: runs the main example (examples/catalog: 4 agents, each with its own Chromium,
//!   scraping a shop the example serves) and checks that it wrote one result line per job.
//!   Installs Chromium first when it is missing.
//! - `test`: every check CI runs: starts Redis and RabbitMQ where installed but stopped, then
//!   formatting, clippy with warnings denied, all tests, the facade built with each feature
//!   alone, `cargo package --workspace`, and a project made by `new` run to its summary.
//! - `bench`: the benchmarks, each next to the plain library it is built on; writes
//!   BENCHMARKS.md from what they print.
//! - `image`: writes a project's `Dockerfile` (and its `.dockerignore`) for its Kubernetes
//!   image; building it is left to `docker build`.
//! - `new PATH`: writes a new project like examples/hello that depends on this checkout.
//! - `fuzz [--cases N]`: the fuzz targets (project loading, wire decoding, monitor ingest;
//!   property tests seeded by the checked-in corpus) with many more cases than `test` runs.

mod new;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Armada's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run examples/catalog with 4 browser agents and check its results.
    Demo,
    /// Check formatting, run clippy with warnings denied, and run every test.
    Test,
    /// Run the benchmarks (release build), print their tables and write BENCHMARKS.md.
    Bench,
    /// Write a new project like examples/hello that depends on this checkout.
    New {
        /// The project's folder (it must not exist, or be empty); its name names the crate.
        path: PathBuf,
    },
    /// Run the fuzz targets with many cases; what fails is kept in the corpus's regressions.
    Fuzz {
        /// Cases per property (`test` runs a few hundred).
        #[arg(long, default_value_t = 50_000)]
        cases: u32,
    },
    /// Write a project's Dockerfile for its Kubernetes image (does not build it).
    Image {
        /// The project folder (holding Cargo.toml and config/).
        #[arg(long, value_name = "DIR", default_value = "examples/catalog")]
        project: PathBuf,
        /// The binary to put in the image (default: the project's only binary, or
        /// `orchestrate`).
        #[arg(long, value_name = "NAME")]
        bin: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let root = workspace_root();
    let outcome = match Cli::parse().task {
        Task::Demo => demo(&root),
        Task::Test => test(&root),
        Task::Bench => bench(&root),
        Task::Fuzz { cases } => fuzz(&root, cases),
        Task::Image { project, bin } => image(&project, bin.as_deref()),
        Task::New { path } => new::new_project(&root, &path).map(|name| {
            println!(
                "wrote project {name} in {}: `cd {0} && cargo run --bin orchestrate`",
                path.display()
            );
        }),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace this xtask was run from. `cargo run` sets `CARGO_MANIFEST_DIR` for the
/// process; it is read at run time because a target directory shared by two checkouts (CI's
/// persistent one) can hand one checkout an xtask binary compiled in the other.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo(root: &Path) -> Command {
    let mut command = cargo_command();
    command.current_dir(root);
    command
}

/// The cargo running this xtask, so that its toolchain builds what the task runs.
fn cargo_command() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(mut command: Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    ensure!(status.success(), "{command:?} failed with {status}");
    Ok(())
}

/// The fuzz targets: (package, test) of each, with its corpus in the package's
/// `tests/corpus/`.
const FUZZ_TARGETS: [(&str, &str); 3] = [
    ("armada-core", "loader_never_panics"),
    ("armada-core", "wire_never_panics"),
    ("armada-monitor", "ingest_never_panics"),
];

fn fuzz(root: &Path, cases: u32) -> Result<()> {
    for (package, target) in FUZZ_TARGETS {
        let mut command = cargo_args(
            root,
            &[
                "test",
                "--locked",
                "--release",
                "-p",
                package,
                "--test",
                target,
            ],
        );
        command.env("PROPTEST_CASES", cases.to_string());
        run(command)?;
    }
    Ok(())
}

/// Where Debian puts Chromium and Xvfb (for visible browsers on machines without a display).
const CHROMIUM: &str = "/usr/bin/chromium";
const XVFB: &str = "/usr/bin/Xvfb";

/// Installs Chromium from Debian's packages when it is missing and this is root; otherwise
/// says how.
fn ensure_chromium() -> Result<()> {
    ensure_installed(&[(CHROMIUM, "chromium"), (XVFB, "xvfb")])
}

/// What the tests of runs spread over hosts need: network namespaces joined by veth pairs
/// (iproute2's `ip`) and relays from them to this machine's services (socat).
fn ensure_host_tools() -> Result<()> {
    ensure_installed(&[("/usr/sbin/ip", "iproute2"), ("/usr/bin/socat", "socat")])
}

/// Installs the Debian packages whose programs are missing, as root; otherwise says how.
fn ensure_installed(programs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !Path::new(program).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    ensure!(
        root,
        "{} needed and not installed: run `sudo apt-get install -y {}`, then this command again",
        missing.join(", "),
        missing.join(" ")
    );
    eprintln!("installing Debian's {}", missing.join(", "));
    let mut update = Command::new("apt-get");
    update.arg("update");
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y"]).args(&missing);
    run(install)?;
    for (program, _) in programs {
        ensure!(
            Path::new(program).exists(),
            "apt-get installed no {program}"
        );
    }
    Ok(())
}

fn demo(root: &Path) -> Result<()> {
    ensure_chromium()?;
    let output = root.join("target").join("demo").join("results.jsonl");
    let mut command = cargo(root);
    command.args([
        "run",
        "--quiet",
        "-p",
        "catalog",
        "--bin",
        "catalog-orchestrate",
        "--",
    ]);
    command.args(["launch", "--agents", "4", "--output"]);
    command.arg(&output);
    run(command)?;
    let text = std::fs::read_to_string(&output)
        .with_context(|| format!("the demo wrote no results at {}", output.display()))?;
    let mut indexes = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let result: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", output.display(), number + 1))?;
        let index = result["index"]
            .as_u64()
            .with_context(|| format!("{}:{}: no job index", output.display(), number + 1))?;
        ensure!(indexes.insert(index), "job {index} has two result lines");
    }
    let jobs = std::fs::read_to_string(root.join("examples/catalog/config/data_job.csv"))?
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count() as u64;
    if indexes != (0..jobs).collect() {
        bail!(
            "expected one result line for each of the {jobs} jobs, found {}",
            indexes.len()
        );
    }
    eprintln!(
        "demo OK: one result line for each of the {jobs} jobs in {}",
        output.display()
    );
    Ok(())
}

/// A service the tests talk to, and how to start or install it on Debian.
struct Service {
    name: &'static str,
    address: &'static str,
    start: &'static [&'static str],
    package: &'static str,
}

const SERVICES: [Service; 3] = [
    Service {
        name: "Redis",
        address: "127.0.0.1:6379",
        start: &[
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        package: "redis-server",
    },
    Service {
        name: "RabbitMQ",
        address: "127.0.0.1:5672",
        start: &["rabbitmq-server", "-detached"],
        package: "rabbitmq-server",
    },
    Service {
        name: "PostgreSQL",
        address: "127.0.0.1:5432",
        start: &["service", "postgresql", "start"],
        package: "postgresql",
    },
];

fn reachable(address: &str) -> bool {
    address
        .parse()
        .is_ok_and(|address| TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok())
}

/// Starts each service that is installed but not running; fails, saying how to install it,
/// when it is not installed.
fn ensure_services() -> Result<()> {
    for service in &SERVICES {
        if reachable(service.address) {
            continue;
        }
        eprintln!(
            "{} is not running on {}: starting it",
            service.name, service.address
        );
        let started = Command::new(service.start[0])
            .args(&service.start[1..])
            .status();
        match started {
            Ok(status) if status.success() => {}
            Ok(status) => bail!("`{}` failed with {status}", service.start.join(" ")),
            Err(error) => bail!(
                "{} is needed by the tests and is not installed ({error}): install it with \
                 `apt-get install -y {}` (as root), then run `cargo xtask test` again",
                service.name,
                service.package
            ),
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while !reachable(service.address) {
            ensure!(
                Instant::now() < deadline,
                "{} was started but does not answer on {}",
                service.name,
                service.address
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// The facade's optional features that `test` builds in on top of the examples' own.
/// `armada/mssql` is compiled and linted here; its conformance suite runs only when
/// `ARMADA_MSSQL_URL` names a SQL Server (none runs on these machines).
const ALL_FEATURES: &str = "armada/postgres,armada/mssql,armada/kubernetes";

fn test(root: &Path) -> Result<()> {
    ensure_services()?;
    ensure_chromium()?;
    ensure_host_tools()?;
    lint_and_test_workspace(root)?;
    // The catalog's browser tests ran above with the default `browser.pages: reuse`; they run
    // again with a tab per job, the other mode. The same features keep the same build.
    let mut tab_per_job = cargo_args(
        root,
        &[
            "test",
            "--locked",
            "--workspace",
            "--features",
            ALL_FEATURES,
            "--test",
            "browser",
        ],
    );
    tab_per_job.env("ARMADA_TEST_BROWSER_PAGES", "new_per_job");
    run(tab_per_job)?;
    // The workspace build compiles every backend in; armada-core alone has none, which is
    // where the errors for a backend that is not compiled in are tested.
    run(cargo_args(
        root,
        &[
            "test",
            "--locked",
            "-p",
            "armada-core",
            "--test",
            "memory_queue",
        ],
    ))?;
    run(cargo_args(
        root,
        &[
            "test",
            "--locked",
            "--workspace",
            "--doc",
            "--features",
            ALL_FEATURES,
        ],
    ))?;
    check_each_feature(root)?;
    package_workspace(root)?;
    new_project_runs(root)
}

/// Formatting, clippy with warnings denied, and every test of the workspace, in one build
/// with every optional backend: the PostgreSQL store's conformance suite and the Kubernetes
/// launcher's tests (against a fake API server) run with the rest.
fn lint_and_test_workspace(root: &Path) -> Result<()> {
    run(cargo_args(root, &["fmt", "--all", "--", "--check"]))?;
    run(cargo_args(
        root,
        &[
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--features",
            ALL_FEATURES,
            "--",
            "-D",
            "warnings",
        ],
    ))?;
    // Benchmarks are built (and linted) above but run only by `cargo xtask bench`, in release.
    run(cargo_args(
        root,
        &[
            "test",
            "--locked",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--examples",
            "--features",
            ALL_FEATURES,
        ],
    ))?;
    Ok(())
}

/// `cargo package` of the published crates, each verified by building it from its package.
/// Cargo treats a registry's package of a given version as immutable: it keeps the sources it
/// extracted and the libraries it built from them, so a second run would verify the crates'
/// dependents against the first run's code. The verification builds in a target folder of its
/// own, from which this workspace's packages, their extracted sources and their builds are
/// removed first; the dependencies' builds stay.
fn package_workspace(root: &Path) -> Result<()> {
    let target = target_dir(root).join("package-verify");
    forget_packaged_sources(&target)?;
    // The examples and xtask are not published; packaging them would only build them again.
    let mut package = cargo_args(
        root,
        &[
            "package",
            "--locked",
            "--workspace",
            "--allow-dirty",
            "--exclude",
            "hello",
            "--exclude",
            "catalog",
            "--exclude",
            "embedded-service",
            "--exclude",
            "xtask",
        ],
    );
    package.env("CARGO_TARGET_DIR", &target);
    run(package)
}

/// Removes from `target` this workspace's packages, the registry their dependents are verified
/// against, and what was built from them, and the sources cargo extracted from that registry.
fn forget_packaged_sources(target: &Path) -> Result<()> {
    let remove = |path: &Path| -> Result<()> {
        if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        }
        .with_context(|| format!("cannot remove {}", path.display()))
    };
    let ours = |name: &str| name.starts_with("armada") || name.starts_with("libarmada");
    for folder in [
        "package",
        "debug/deps",
        "debug/.fingerprint",
        "debug/build",
        "debug/incremental",
    ] {
        let Ok(entries) = std::fs::read_dir(target.join(folder)) else {
            continue;
        };
        for entry in entries.flatten() {
            if folder == "package" || ours(&entry.file_name().to_string_lossy()) {
                remove(&entry.path())?;
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(sources) = cargo_home.map(|home| home.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(());
    };
    // The overlay registries `cargo package` makes are named `-HASH`; crates.io's are not.
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for package in std::fs::read_dir(registry.path())?.flatten() {
            if package.file_name().to_string_lossy().starts_with("armada") {
                std::fs::remove_dir_all(package.path())
                    .with_context(|| format!("cannot remove {}", package.path().display()))?;
            }
        }
    }
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn cargo_args(root: &Path, args: &[&str]) -> Command {
    let mut command = cargo(root);
    command.args(args);
    command
}

/// The facade's features, each of which must build alone: a workspace build unifies them
/// all, so the code behind `cfg(not(feature = …))` is only compiled here.
const FEATURES: [&str; 8] = [
    "cli",
    "testing",
    "redis",
    "rabbitmq",
    "browser",
    "postgres",
    "mssql",
    "kubernetes",
];

fn check_each_feature(root: &Path) -> Result<()> {
    let check = ["check", "--locked", "-p", "armada", "--lib"];
    run(cargo_args(root, &check))?;
    run(cargo_args(
        root,
        &[&check[..], &["--no-default-features"]].concat(),
    ))?;
    for feature in FEATURES {
        let alone = ["--no-default-features", "--features", feature];
        run(cargo_args(root, &[&check[..], &alone[..]].concat()))?;
    }
    Ok(())
}

/// `new` makes a project that builds on this checkout and runs to its summary.
fn new_project_runs(root: &Path) -> Result<()> {
    let folder = std::env::temp_dir().join(format!("armada-new-{}", std::process::id()));
    let project = folder.join("first-project");
    let outcome = new::new_project(root, &project).and_then(|_| {
        let mut launch = cargo_command();
        launch
            .current_dir(&project)
            .args([
                "run",
                "--bin",
                "orchestrate",
                "--",
                "--jobs",
                "6",
                "--no-dashboard",
            ])
            // A target folder of its own, kept between runs: in the workspace's, its
            // `orchestrate` would replace examples/hello's.
            .env("CARGO_TARGET_DIR", target_dir(root).join("new-project"));
        run(launch)
    });
    let _ = std::fs::remove_dir_all(&folder);
    outcome
}

/// One benchmark: a Cargo bench target (harness = false) that prints markdown to stdout.
struct Bench {
    /// The bench target's name (unique in the workspace).
    name: &'static str,
    /// Its section's title in BENCHMARKS.md.
    title: &'static str,
    /// The command that reproduces it, from the workspace root.
    command: &'static str,
    /// Whether one line is reproduced alone by adding `-- KEY`, its first column.
    keyed: bool,
}

const BENCHES: [Bench; 6] = [
    Bench {
        name: "embedded",
        title: "Orchestration overhead, embedded",
        command: "cargo bench -p armada --bench embedded",
        keyed: true,
    },
    Bench {
        name: "distributed",
        title: "Orchestration overhead, Redis + RabbitMQ",
        command: "cargo bench -p armada --features redis,rabbitmq --bench distributed",
        keyed: true,
    },
    Bench {
        name: "pages",
        title: "Browser jobs",
        command: "cargo bench -p catalog --bench pages",
        keyed: true,
    },
    Bench {
        name: "scale",
        title: "Scale of a run",
        command: "cargo bench -p armada --bench scale",
        keyed: true,
    },
    Bench {
        name: "monitor",
        title: "Monitor",
        command: "cargo bench -p armada-monitor --features postgres --bench monitor",
        keyed: false,
    },
    Bench {
        name: "startup",
        title: "Start-up",
        command: "cargo bench -p armada --features redis,rabbitmq --bench startup",
        keyed: true,
    },
];

/// The packages holding the benches and the features they need, built together in one
/// `cargo bench --no-run` (with a `--bench` per bench) so that every bench links the same
/// build of the workspace.
const BENCH_BUILD: [&str; 8] = [
    "-p",
    "armada",
    "-p",
    "catalog",
    "-p",
    "armada-monitor",
    "--features",
    "armada/redis,armada/rabbitmq,armada-monitor/postgres",
];

/// What one bench printed, and how it went.
struct BenchRun {
    output: String,
    elapsed: Duration,
    failure: Option<String>,
}

/// Builds every bench in release, runs each in turn (its stdout shown and captured), and
/// writes BENCHMARKS.md at the workspace root from what they printed.
fn bench(root: &Path) -> Result<()> {
    ensure_services()?;
    ensure_chromium()?;
    let executables = build_benches(root)?;
    let machine = machine(root);
    let started = Instant::now();
    let mut runs = Vec::new();
    for bench in &BENCHES {
        let (executable, folder) = executables
            .iter()
            .find(|(name, _, _)| name == bench.name)
            .map(|(_, executable, folder)| (executable, folder))
            .with_context(|| format!("cargo built no bench named {}", bench.name))?;
        eprintln!("\n=== {} ({}) ===", bench.title, bench.name);
        let run = run_bench(executable, folder)?;
        eprintln!(
            "=== {} took {:.0} s ===",
            bench.name,
            run.elapsed.as_secs_f64()
        );
        runs.push(run);
    }
    let total = started.elapsed();
    let text = benchmarks_md(&machine, &runs, total);
    let path = root.join("BENCHMARKS.md");
    write_file(&path, &text)?;
    eprintln!(
        "wrote {} ({:.0} s of benchmarks)",
        path.display(),
        total.as_secs_f64()
    );
    let failed: Vec<&str> = BENCHES
        .iter()
        .zip(&runs)
        .filter(|(_, run)| run.failure.is_some())
        .map(|(bench, _)| bench.name)
        .collect();
    ensure!(failed.is_empty(), "benches failed: {}", failed.join(", "));
    Ok(())
}

/// Builds the benches; returns each one's (name, executable, package folder).
fn build_benches(root: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut command = cargo(root);
    command
        .args(["bench", "--locked", "--no-run"])
        .args(BENCH_BUILD)
        .args(BENCHES.iter().flat_map(|bench| ["--bench", bench.name]))
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(std::process::Stdio::piped());
    eprintln!("$ {command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    ensure!(
        output.status.success(),
        "building the benches failed with {}",
        output.status
    );
    let mut executables = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bench = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bench"));
        let (Some(name), Some(executable), Some(manifest)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && is_bench {
            let folder = Path::new(manifest)
                .parent()
                .map_or_else(|| root.to_path_buf(), Path::to_path_buf);
            executables.push((name.to_owned(), PathBuf::from(executable), folder));
        }
    }
    Ok(executables)
}

/// Runs one bench binary as `cargo bench` would (in its package's folder, with `--bench`),
/// echoing its stdout while capturing it.
fn run_bench(executable: &Path, folder: &Path) -> Result<BenchRun> {
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = Command::new(executable)
        .arg("--bench")
        .current_dir(folder)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", executable.display()))?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait()?;
    Ok(BenchRun {
        output,
        elapsed: started.elapsed(),
        failure: (!status.success()).then(|| format!("exited with {status}")),
    })
}

/// The machine, as a markdown list.
fn machine(root: &Path) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let command_line = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .filter(|text| !text.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or_else(
            || "unknown".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let chromium = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .map_or_else(
            || "not installed".to_owned(),
            |path| command_line(path, &["--version"]),
        );
    let cores = command_line("nproc", &[]);
    format!(
        "- date: {} (UTC)\n- cores (`nproc`): {cores}\n- CPU: {cpu}\n- RAM: {memory_gib}\n\
         - kernel: {}\n- rustc: {}\n- Chromium: {chromium}\n- load average before the run \
         (1, 5, 15 min): {}\n",
        utc_now(),
        read("/proc/sys/kernel/osrelease").trim(),
        command_line("rustc", &["--version"]),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Now, as `YYYY-MM-DD HH:MM`, in UTC (days to a civil date: Howard Hinnant's algorithm).
fn utc_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs()) as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3_600,
        of_day % 3_600 / 60
    )
}

/// The monitor bench prints its table only; its targets are read from it here.
fn monitor_targets(output: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in output.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(store), Some(what), Some(armada)) = (cells.get(1), cells.get(2), cells.get(3))
        else {
            continue;
        };
        let number = |text: &str| {
            text.split_whitespace()
                .find_map(|word| word.parse::<f64>().ok())
        };
        if what.starts_with("ingest") {
            let floor = if *store == "SQLite" {
                50_000.0
            } else {
                20_000.0
            };
            if let Some(rate) = number(armada) {
                targets.push(target_line(
                    &format!("monitor, at least {floor:.0} events/s into {store}"),
                    rate >= floor,
                    &format!("{rate:.0} events/s"),
                ));
            }
        } else if what.starts_with("page of") && what.contains("over HTTP") {
            // A keyset page; sorted pages and searches read the whole run and have no target.
            let p99 = armada
                .split_once("p99")
                .and_then(|(_, rest)| number(rest.trim_end_matches(" ms")));
            if let Some(p99) = p99 {
                targets.push(target_line(
                    &format!("monitor, a page of jobs from {store} under 50 ms (p99 over HTTP)"),
                    p99 < 50.0,
                    &format!("p99 {p99:.2} ms"),
                ));
            }
        }
    }
    targets
}

fn target_line(what: &str, met: bool, figure: &str) -> String {
    let verdict = if met { "met" } else { "**MISSED**" };
    format!("- Target: {what}: {verdict} ({figure})")
}

/// BENCHMARKS.md: the machine, the targets, then one section per bench with its command.
fn benchmarks_md(machine: &str, runs: &[BenchRun], total: Duration) -> String {
    let mut targets = Vec::new();
    for (bench, run) in BENCHES.iter().zip(runs) {
        if bench.name == "monitor" {
            targets.extend(monitor_targets(&run.output));
        } else {
            targets.extend(
                run.output
                    .lines()
                    .filter(|line| line.starts_with("- Target:"))
                    .map(str::to_owned),
            );
        }
        if let Some(failure) = &run.failure {
            targets.push(format!("- **FAILED**: bench `{}` {failure}", bench.name));
        }
    }
    let mut text = format!(
        "# Benchmarks\n\n<!-- Written by `cargo xtask bench`; edit xtask/src/main.rs or the \
         benches, not this file. -->\n\n`cargo xtask bench` builds every bench in release, runs \
         each measurement next to the plain library it is built on, in the same process and the \
         same run, and writes this file. On a shared machine the absolute figures move with the \
         load; the ratios to the plain libraries are what to compare.\n\n## Machine\n\n\
         {machine}- the whole suite ran in {:.0} s ({})\n\n## Targets\n\n{}\n{}",
        total.as_secs_f64(),
        BENCHES
            .iter()
            .zip(runs)
            .map(|(bench, run)| format!("{} {:.0} s", bench.name, run.elapsed.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        targets.join("\n"),
        if targets.iter().any(|line| line.contains("MISSED")) {
            "\nWhere the time and memory of each missed target go, profiled, with what was \
             changed and why the rest stays: [docs/performance.md](docs/performance.md).\n"
        } else {
            "\nThe targets missed in earlier runs, profiled, with what was changed: \
             [docs/performance.md](docs/performance.md).\n"
        },
    );
    for (bench, run) in BENCHES.iter().zip(runs) {
        let one_line = if bench.keyed {
            format!(
                "; one line: `{} -- KEY`, KEY its first column",
                bench.command
            )
        } else {
            String::new()
        };
        text.push_str(&format!(
            "\n## {}\n\nReproduce: `{}`{one_line} (from the workspace root; took {:.0} s \
             here)\n\n",
            bench.title,
            bench.command,
            run.elapsed.as_secs_f64()
        ));
        let body: Vec<&str> = run
            .output
            .lines()
            .filter(|line| !line.starts_with("- Target:"))
            .collect();
        text.push_str(body.join("\n").trim());
        text.push('\n');
        if let Some(failure) = &run.failure {
            text.push_str(&format!("\n**The bench failed**: it {failure}.\n"));
        }
    }
    text
}

/// The Dockerfile of a project's image; `{name}`s are filled in by `image`.
const DOCKERFILE: &str = include_str!("Dockerfile.template");

/// What the build context needs: not the build output, not git, not runs' files.
const DOCKERIGNORE: &str = "# Written by `cargo xtask image`: keeps the build context small.\n\
    target/\n.git/\n**/.armada/\n**/node_modules/\n";

/// Writes `Dockerfile` and `Dockerfile.dockerignore` (read by BuildKit next to its
/// Dockerfile) into the project, for a build whose context is the project's workspace root.
fn image(project: &Path, bin: Option<&str>) -> Result<()> {
    let manifest = project.join("Cargo.toml");
    let metadata = cargo_metadata(&manifest)?;
    let manifest = std::fs::canonicalize(&manifest)?;
    let package = package_of(&metadata, &manifest)?;
    let name = package["name"].as_str().unwrap_or_default();
    let binary = choose_binary(name, &binaries(package), bin)?;
    let workspace = PathBuf::from(metadata["workspace_root"].as_str().unwrap_or("."));
    let folder = manifest.parent().unwrap_or(Path::new("."));
    let project_dir = relative_dir(folder, &workspace);
    let dockerfile = folder.join("Dockerfile");
    let text = DOCKERFILE
        .replace("{package}", name)
        .replace("{binary}", binary)
        .replace("{project_dir}", &project_dir)
        .replace("{rust_version}", "1.95")
        .replace("{dockerfile}", &format!("{project_dir}/Dockerfile"))
        .replace("{context}", ".");
    write_file(&dockerfile, &text)?;
    let ignore = folder.join("Dockerfile.dockerignore");
    write_file(&ignore, DOCKERIGNORE)?;
    eprintln!(
        "wrote {} and {}; build the image from the workspace root:\n  cd {} && docker build -f \
         {project_dir}/Dockerfile -t REGISTRY/{name}:TAG .",
        dockerfile.display(),
        ignore.display(),
        workspace.display()
    );
    Ok(())
}

fn cargo_metadata(manifest: &Path) -> Result<serde_json::Value> {
    let output = cargo_command()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .with_context(|| format!("cannot run cargo metadata for {}", manifest.display()))?;
    ensure!(
        output.status.success(),
        "cargo metadata failed for {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The package of `cargo metadata` whose manifest is `manifest` (canonical, as cargo gives
/// it).
fn package_of<'a>(
    metadata: &'a serde_json::Value,
    manifest: &Path,
) -> Result<&'a serde_json::Value> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["manifest_path"].as_str().map(Path::new) == Some(manifest))
        .with_context(|| format!("{} is not a package", manifest.display()))
}

fn binaries(package: &serde_json::Value) -> Vec<&str> {
    package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
        })
        .filter_map(|target| target["name"].as_str())
        .collect()
}

/// `bin` when the package has it; without `bin`, its only binary, else `orchestrate`.
fn choose_binary<'a>(package: &str, binaries: &[&'a str], bin: Option<&'a str>) -> Result<&'a str> {
    Ok(match (bin, binaries) {
        (Some(bin), _) if binaries.contains(&bin) => bin,
        (Some(bin), _) => bail!(
            "{package} has no binary {bin} (it has: {})",
            binaries.join(", ")
        ),
        (None, [only]) => only,
        (None, _) if binaries.contains(&"orchestrate") => "orchestrate",
        (None, _) => bail!(
            "{package} has binaries {} : choose one with --bin",
            binaries.join(", ")
        ),
    })
}

/// `folder` relative to `workspace`, `.` for the workspace itself (or a folder outside it).
fn relative_dir(folder: &Path, workspace: &Path) -> String {
    let relative = folder.strip_prefix(workspace).unwrap_or(Path::new("."));
    match relative.to_string_lossy().into_owned() {
        relative if relative.is_empty() => ".".to_owned(),
        relative => relative,
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

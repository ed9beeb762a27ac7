//! Project automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `demo`: runs the main example (examples/catalog: 4 agents, each with its own Chromium,
//!   scraping a shop the example serves) and checks that it wrote one result line per job.
//!   Installs Chromium first when it is missing.
//! - `test`: every check CI runs: starts Redis and RabbitMQ where installed but stopped, then
//!   formatting, clippy with warnings denied, all tests.
//! - `bench`: the benchmarks, each next to the plain library it is built on.
//! - `image`: writes a project's `Dockerfile` (and its `.dockerignore`) for its Kubernetes
//!   image; building it is left to `docker build`.

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
    /// Run the benchmarks (release build) and print their tables.
    Bench,
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
        Task::Image { project, bin } => image(&project, bin.as_deref()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    command
}

fn run(mut command: Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    ensure!(status.success(), "{command:?} failed with {status}");
    Ok(())
}

/// Where Debian puts Chromium and Xvfb (for visible browsers on machines without a display).
const CHROMIUM: &str = "/usr/bin/chromium";
const XVFB: &str = "/usr/bin/Xvfb";

/// Installs Chromium from Debian's packages when it is missing and this is root; otherwise
/// says how.
fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() && Path::new(XVFB).exists() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    ensure!(
        root,
        "Chromium and Xvfb are needed and not installed: run `sudo apt-get install -y chromium \
         xvfb`, then this command again"
    );
    eprintln!("Chromium or Xvfb is not installed: installing Debian's packages");
    let mut update = Command::new("apt-get");
    update.arg("update");
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "chromium"]);
    run(install)?;
    ensure!(
        Path::new(CHROMIUM).exists(),
        "apt-get installed no {CHROMIUM}"
    );
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
    let mut fmt = cargo(root);
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    // One build with every optional backend: the PostgreSQL store's conformance suite and the
    // Kubernetes launcher's tests (against a fake API server) run with the rest.
    let mut clippy = cargo(root);
    clippy.args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--features",
        ALL_FEATURES,
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    let mut tests = cargo(root);
    // Benchmarks are built (and linted) above but run only by `cargo xtask bench`, in release.
    tests.args([
        "test",
        "--locked",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--examples",
        "--features",
        ALL_FEATURES,
    ]);
    run(tests)?;
    // The workspace build compiles every backend in; armada-core alone has none, which is
    // where the errors for a backend that is not compiled in are tested.
    let mut core_alone = cargo(root);
    core_alone.args([
        "test",
        "--locked",
        "-p",
        "armada-core",
        "--test",
        "memory_queue",
    ]);
    run(core_alone)?;
    let mut doc_tests = cargo(root);
    doc_tests.args([
        "test",
        "--locked",
        "--workspace",
        "--doc",
        "--features",
        ALL_FEATURES,
    ]);
    run(doc_tests)
}

fn bench(root: &Path) -> Result<()> {
    ensure_services()?;
    let mut command = cargo(root);
    command.args([
        "bench",
        "--locked",
        "-p",
        "armada",
        "--features",
        "redis,rabbitmq",
    ]);
    command.args(["--bench", "embedded", "--bench", "distributed"]);
    run(command)?;
    ensure_chromium()?;
    let mut browser = cargo(root);
    browser.args(["bench", "--locked", "-p", "catalog", "--bench", "pages"]);
    run(browser)
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
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .with_context(|| format!("cannot run cargo metadata for {}", manifest.display()))?;
    ensure!(
        output.status.success(),
        "cargo metadata failed for {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest = std::fs::canonicalize(&manifest)?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["manifest_path"].as_str().map(Path::new) == Some(&manifest))
        .with_context(|| format!("{} is not a package", manifest.display()))?;
    let name = package["name"].as_str().unwrap_or_default();
    let binaries: Vec<&str> = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
        })
        .filter_map(|target| target["name"].as_str())
        .collect();
    let binary = match (bin, binaries.as_slice()) {
        (Some(bin), _) if binaries.contains(&bin) => bin,
        (Some(bin), _) => bail!(
            "{name} has no binary {bin} (it has: {})",
            binaries.join(", ")
        ),
        (None, [only]) => only,
        (None, _) if binaries.contains(&"orchestrate") => "orchestrate",
        (None, _) => bail!(
            "{name} has binaries {} : choose one with --bin",
            binaries.join(", ")
        ),
    };
    let workspace = PathBuf::from(metadata["workspace_root"].as_str().unwrap_or("."));
    let folder = manifest.parent().unwrap_or(Path::new("."));
    let project_dir = folder.strip_prefix(&workspace).unwrap_or(Path::new("."));
    let project_dir = match project_dir.to_string_lossy().into_owned() {
        relative if relative.is_empty() => ".".to_owned(),
        relative => relative,
    };
    let dockerfile = folder.join("Dockerfile");
    let text = DOCKERFILE
        .replace("{package}", name)
        .replace("{binary}", binary)
        .replace("{project_dir}", &project_dir)
        .replace("{rust_version}", "1.95")
        .replace("{dockerfile}", &format!("{project_dir}/Dockerfile"))
        .replace("{context}", ".");
    std::fs::write(&dockerfile, text)
        .with_context(|| format!("cannot write {}", dockerfile.display()))?;
    let ignore = folder.join("Dockerfile.dockerignore");
    std::fs::write(&ignore, DOCKERIGNORE)
        .with_context(|| format!("cannot write {}", ignore.display()))?;
    eprintln!(
        "wrote {} and {}; build the image from the workspace root:\n  cd {} && docker build -f \
         {project_dir}/Dockerfile -t REGISTRY/{name}:TAG .",
        dockerfile.display(),
        ignore.display(),
        workspace.display()
    );
    Ok(())
}

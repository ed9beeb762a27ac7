//! One Chromium process tree: started in its own process group with a parent-death signal,
//! killed as a group and its profile folder removed when dropped. Nothing of it outlives its
//! agent, even one killed with SIGKILL (the kernel sends Chromium SIGKILL when the agent's
//! thread that spawned it exits, and the orchestrator removes the run's scratch folders).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use super::BrowserError;

/// Flags that keep Chromium quiet on a closed network and fast in a container. Written without
/// `--`, as chromiumoxide's arguments, but passed here directly.
const QUIET_FLAGS: [&str; 9] = [
    "disable-gpu",
    "disable-quic",
    "no-first-run",
    "no-default-browser-check",
    "disable-background-networking",
    "disable-component-update",
    "disable-sync",
    "disable-dev-shm-usage",
    "disable-breakpad",
];

/// A Chromium process the agent started in its own process group; dropping it kills the group.
#[derive(Debug)]
pub(crate) struct ChromiumProcess {
    child: Child,
    profile: PathBuf,
    /// The DevTools WebSocket URL.
    pub(crate) websocket: String,
}

/// What a launch needs: the executable, the profile folder, and the command-line switches
/// Chromium gets.
pub(crate) struct Launch<'a> {
    pub(crate) executable: &'a Path,
    pub(crate) profile: PathBuf,
    pub(crate) headless: bool,
    pub(crate) window_size: [u32; 2],
    pub(crate) proxy_server: Option<String>,
    pub(crate) proxy_bypass: &'a [String],
    /// The identity's user agent, browser-wide: requests the browser makes itself (favicons,
    /// prefetches) do not see the per-page override.
    pub(crate) user_agent: Option<&'a str>,
    /// The identity's languages, browser-wide for the same reason.
    pub(crate) accept_language: Option<&'a str>,
    /// The X display of a visible browser (`:101`), when not the session's own.
    pub(crate) display: Option<String>,
    pub(crate) extra_args: &'a [String],
    /// How long Chromium may take to print its DevTools address.
    pub(crate) startup_timeout: Duration,
}

/// Finds Chromium: Debian's real binary first (its `/usr/bin/chromium` is a wrapper script
/// that adds flags), then the usual names on `PATH`.
pub(crate) fn find_executable() -> Option<PathBuf> {
    let known = [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ];
    if let Some(path) = known.iter().map(PathBuf::from).find(|path| path.is_file()) {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

impl Launch<'_> {
    fn command(&self) -> Command {
        let mut command = Command::new(self.executable);
        command
            .args(self.arguments())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(display) = &self.display {
            command.env("DISPLAY", display);
        }
        own_process_group_dying_with_parent(&mut command);
        command
    }

    fn arguments(&self) -> Vec<String> {
        let mut arguments = Vec::new();
        if self.headless {
            arguments.push("--headless".to_owned());
        }
        arguments.extend(QUIET_FLAGS.map(|flag| format!("--{flag}")));
        arguments.extend([
            "--remote-debugging-port=0".to_owned(),
            format!("--user-data-dir={}", self.profile.display()),
            format!(
                "--window-size={},{}",
                self.window_size[0], self.window_size[1]
            ),
        ]);
        if is_root() {
            arguments.push("--no-sandbox".to_owned());
        }
        if let Some(proxy) = &self.proxy_server {
            arguments.push(format!("--proxy-server={proxy}"));
            if !self.proxy_bypass.is_empty() {
                arguments.push(format!(
                    "--proxy-bypass-list={}",
                    self.proxy_bypass.join(";")
                ));
            }
        }
        if let Some(user_agent) = self.user_agent {
            arguments.push(format!("--user-agent={user_agent}"));
        }
        if let Some(languages) = self.accept_language {
            arguments.push(format!("--accept-lang={languages}"));
        }
        for extra in self.extra_args {
            arguments.push(format!("--{}", extra.trim_start_matches('-')));
        }
        // No tab until a job asks for one: a start tab would hold a renderer for nothing.
        arguments.push("--no-startup-window".to_owned());
        arguments
    }
}

impl ChromiumProcess {
    /// Starts Chromium and waits for its DevTools endpoint.
    pub(crate) async fn launch(launch: Launch<'_>) -> Result<Self, BrowserError> {
        std::fs::create_dir_all(&launch.profile).map_err(|source| BrowserError::Io {
            what: format!("create the profile folder {}", launch.profile.display()),
            source,
        })?;
        let mut child = launch
            .command()
            .spawn()
            .map_err(|source| BrowserError::Io {
                what: format!("start {}", launch.executable.display()),
                source,
            })?;
        let stderr = child.stderr.take();
        // Owned before anything else can fail, so a failed start still kills the process
        // tree and removes the profile as this drops.
        let mut process = Self {
            child,
            profile: launch.profile,
            websocket: String::new(),
        };
        let Some(stderr) = stderr else {
            return Err(BrowserError::Startup(
                "Chromium's stderr is not readable".into(),
            ));
        };
        let mut lines = BufReader::new(stderr).lines();
        process.websocket = devtools_address(&mut lines, launch.startup_timeout).await?;
        // Keep draining stderr so Chromium never blocks on a full pipe; the task ends with it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(process)
    }

    /// The process group's id (Chromium's pid: it leads its own group).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether Chromium's main process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory of the whole process tree, in megabytes.
    pub(crate) fn resident_mb(&self) -> u64 {
        self.pid()
            .map_or(0, |group| group_resident_kb(group) / 1024)
    }
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        if let Some(group) = self.pid() {
            kill_group(group);
        }
        // Reap the main process so it leaves no zombie; the group's other members are
        // Chromium's children and reaped by it, or by init once it is gone.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
        if let Err(error) = std::fs::remove_dir_all(&self.profile)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(folder = %self.profile.display(), %error, "cannot remove a browser profile");
        }
    }
}

/// An Xvfb server for a visible browser on a machine without a display.
#[derive(Debug)]
pub(crate) struct VirtualDisplay {
    child: Child,
    number: u32,
}

impl VirtualDisplay {
    /// Starts Xvfb on a free display number and waits until it accepts connections.
    pub(crate) async fn start(size: [u32; 2]) -> Result<Self, BrowserError> {
        let executable = ["/usr/bin/Xvfb", "/usr/local/bin/Xvfb"]
            .into_iter()
            .map(Path::new)
            .find(|path| path.is_file())
            .ok_or_else(|| {
                BrowserError::Startup(
                    "a visible browser (browser.screen_visible) needs a display: DISPLAY is not \
                     set and Xvfb is not installed (`apt-get install -y xvfb`)"
                        .into(),
                )
            })?;
        // Start the search at a number that differs between processes, to avoid races.
        let start = 100 + std::process::id() % 400;
        for number in (start..start + 50).map(|number| 100 + (number - 100) % 400) {
            if Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                continue;
            }
            let mut command = Command::new(executable);
            command
                .arg(format!(":{number}"))
                .args(["-screen", "0", &format!("{}x{}x24", size[0], size[1])])
                .args(["-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            own_process_group_dying_with_parent(&mut command);
            let child = command.spawn().map_err(|source| BrowserError::Io {
                what: "start Xvfb".into(),
                source,
            })?;
            let mut display = Self { child, number };
            let socket = format!("/tmp/.X11-unix/X{number}");
            for _ in 0..100 {
                if Path::new(&socket).exists() {
                    return Ok(display);
                }
                if !matches!(display.child.try_wait(), Ok(None)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Lost a race for this number, or too slow: the drop kills it; try the next.
        }
        Err(BrowserError::Startup(
            "Xvfb found no free display number".into(),
        ))
    }

    /// The `DISPLAY` value.
    pub(crate) fn display(&self) -> String {
        format!(":{}", self.number)
    }
}

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        if let Some(group) = self.child.id() {
            kill_group(group);
        }
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// Reads Chromium's stderr until it prints its DevTools WebSocket URL, keeping the last lines
/// to explain a failure.
async fn devtools_address(
    lines: &mut Lines<BufReader<ChildStderr>>,
    timeout: Duration,
) -> Result<String, BrowserError> {
    let mut last_lines = Vec::new();
    let found = tokio::time::timeout(timeout, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                return Some(url.trim().to_owned());
            }
            last_lines.push(line);
            if last_lines.len() > 20 {
                last_lines.remove(0);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(url)) => Ok(url),
        Ok(None) => Err(BrowserError::Startup(format!(
            "Chromium exited before it was ready: {}",
            last_lines.join(" | ")
        ))),
        Err(_) => Err(BrowserError::Startup(format!(
            "Chromium gave no DevTools address within {timeout:?} (raise \
             browser.startup_timeout_secs on a loaded machine); it printed: {}",
            last_lines.join(" | ")
        ))),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// Makes the child lead a new process group (so the whole tree can be killed at once) and
/// receive SIGKILL when the thread that spawned it dies (so a SIGKILLed agent takes its browser
/// along). Must be called from a long-lived runtime thread, never `spawn_blocking`.
#[allow(unsafe_code)]
fn own_process_group_dying_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (setpgid, prctl), touching no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn kill_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: kill has no memory preconditions; a negative pid addresses the process group,
    // which this process created and leads.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Sums VmRSS of every process in the group, from /proc.
fn group_resident_kb(group: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, pgrp, ...
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|field| field.parse::<u32>().ok());
        if pgrp != Some(group) {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            total += status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

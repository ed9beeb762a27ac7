//! `cargo xtask new PATH`: a new project like examples/hello, depending on this checkout.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

/// The files of examples/hello a new project starts from, as they are named there.
const TEMPLATE_FILES: [&str; 6] = [
    "src/lib.rs",
    "config/config_template.json",
    "config/config_local.json",
    "config/config_distant.json",
    "config/data_agent.csv",
    "config/data_job.csv",
];

/// Writes the project at `path`, which must not exist or be empty; returns its crate name.
pub fn new_project(root: &Path, path: &Path) -> Result<String> {
    if path.exists() {
        let mut entries =
            std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
        ensure!(
            entries.next().is_none(),
            "{} exists and is not empty: choose a new folder",
            path.display()
        );
    }
    let name = crate_name(path)?;
    let hello = root.join("examples/hello");
    for file in TEMPLATE_FILES {
        let text = std::fs::read_to_string(hello.join(file))
            .with_context(|| format!("cannot read the template's {file}"))?;
        write(&path.join(file), &text)?;
    }
    write(
        &path.join("src/bin/orchestrate.rs"),
        &format!(
            "//! The project's binary: `cargo run --bin orchestrate` (add `-- --help`).\n\n\
             armada::main!({}::Hello);\n",
            name.replace('-', "_")
        ),
    )?;
    write(&path.join("Cargo.toml"), &manifest(&name, root))?;
    write(&path.join(".gitignore"), "/target\n/.armada\n")?;
    // The checkout's lock, so that the new project builds with the versions Armada is tested
    // with, without asking the registry; cargo drops what the project does not use.
    std::fs::copy(root.join("Cargo.lock"), path.join("Cargo.lock"))
        .context("cannot copy Cargo.lock")?;
    Ok(name)
}

fn manifest(name: &str, root: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
# This checkout of Armada; once it is published, `armada = "0.1"` does the same.
# Features: "browser" (a Chromium per agent), "redis" and "rabbitmq" (shared backends),
# "postgres" (the monitor in PostgreSQL), "kubernetes" (agents as pods).
armada = {{ path = "{root}" }}
serde = {{ version = "1", features = ["derive"] }}
tokio = {{ version = "1", features = ["time"] }}

# A workspace of its own, even when it is made inside another one.
[workspace]
"#,
        root = root.display()
    )
}

/// The crate name a folder gives: its name, lower case, with `-` for anything but letters,
/// digits and `_`.
fn crate_name(path: &Path) -> Result<String> {
    let Some(folder) = path.file_name().and_then(|name| name.to_str()) else {
        bail!(
            "{} has no folder name to name the project after",
            path.display()
        );
    };
    let name: String = folder
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    ensure!(
        name.starts_with(|c: char| c.is_ascii_lowercase()),
        "`{folder}` cannot name a crate: start the folder's name with a letter"
    );
    Ok(name)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

//! The catalog project's binary. When it launches runs (`launch`, or `monitor` for the
//! dashboard's Launch page) it also serves the shop the agents scrape (on `CATALOG_SITE_ADDR`, 127.0.0.1:8377 by default, matching `config_local.json`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    let launches = match command.as_deref() {
        // The dashboard's Launch page starts runs from `monitor`, so it needs the shop too.
        None | Some("launch" | "monitor") => true,
        Some(flag) => flag.starts_with('-'),
    };
    if launches {
        let address =
            std::env::var("CATALOG_SITE_ADDR").unwrap_or_else(|_| "127.0.0.1:8377".into());
        let serving = address
            .parse()
            .map_err(|error| format!("CATALOG_SITE_ADDR `{address}`: {error}"))
            .and_then(|address| {
                catalog::site::serve_in_background(address)
                    .map_err(|error| format!("cannot serve the shop on {address}: {error}"))
            });
        if let Err(error) = serving {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    }
    armada::run(
        catalog::Catalog,
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

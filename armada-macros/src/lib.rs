//! Thin proc macros for Armada projects.
//!
//! - `armada::main!(MyScript)` defines the project binary's `main`: the command line
//!   (`launch`, `validate`, `plan`, and the hidden `agent`), with the project folder defaulting
//!   to the crate the binary is built from.
//!
//! # Features
//! None.

use proc_macro::TokenStream;

/// Defines `fn main()` for a project binary from an expression that builds the script:
/// `armada::main!(MyScript);` or `armada::main!(MyScript::new(42));`.
#[proc_macro]
pub fn main(input: TokenStream) -> TokenStream {
    let script = input.to_string();
    let body = if script.trim().is_empty() {
        "::std::compile_error!(\"armada::main! needs the script: armada::main!(MyScript);\");"
            .to_owned()
    } else {
        format!(
            "fn main() -> ::std::process::ExitCode {{\n\
             ::armada::__private::main({script}, ::std::env!(\"CARGO_MANIFEST_DIR\"))\n}}"
        )
    };
    body.parse().unwrap_or_else(|_| {
        "::std::compile_error!(\"armada::main! could not read its argument\");"
            .parse()
            .unwrap_or_default()
    })
}

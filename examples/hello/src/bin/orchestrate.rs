//! The hello project's binary: `cargo run -p hello --bin orchestrate -- launch`.

armada::main!(hello::Hello);

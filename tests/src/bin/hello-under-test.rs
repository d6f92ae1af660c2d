//! The example service `hello_service`, built from its own source inside the
//! test package so end-to-end tests can run it as a real process
//! (`CARGO_BIN_EXE_hello-under-test`): several instances on one Redis.

/// `examples/hello-service/src/main.rs`, unchanged.
#[path = "../../../examples/hello-service/src/main.rs"]
mod hello_service;

fn main() -> anyhow::Result<()> {
    hello_service::main()
}

//! The `kdc` command, built inside the test package so end-to-end tests can
//! run it as a real process (`CARGO_BIN_EXE_kdc-under-test`).

fn main() -> std::process::ExitCode {
    kdc_server::main()
}

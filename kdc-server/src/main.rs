//! The `kdc` command: see `kdc --help` and the README.

fn main() -> std::process::ExitCode {
    kdc_server::main()
}

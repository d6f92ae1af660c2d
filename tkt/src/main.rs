//! `tkt`: kinit/klist/kdestroy for the HTTP ticket authority. See
//! `tkt --help` and the README.

fn main() -> std::process::ExitCode {
    tkt::main()
}

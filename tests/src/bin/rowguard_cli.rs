//! The `rowguard` command line, built inside the test package so specs can run it as a real
//! process (`CARGO_BIN_EXE_rowguard-cli`).

fn main() -> std::process::ExitCode {
    rowguard::cli::main()
}

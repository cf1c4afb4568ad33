//! The `rowguard` command: wiring only (see `rowguard::cli`).

fn main() -> std::process::ExitCode {
    rowguard::cli::main()
}

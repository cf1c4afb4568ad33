//! The `rowguard` command line, built inside the test package so specs and the benchmark can run
//! it as a real process (`CARGO_BIN_EXE_rowguard-cli`), with the same allocator as `rowguard`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rowguard::cli::main()
}

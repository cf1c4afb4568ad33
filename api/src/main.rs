//! The `rowguard` command: wiring only (see `rowguard::cli`).

// A request allocates many small, short-lived objects; mimalloc handles that pattern with less
// CPU than the system allocator (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rowguard::cli::main()
}

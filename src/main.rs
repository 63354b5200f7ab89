//! The `fetchgate` binary: parse the command line and hand over to the library.

/// mimalloc rather than glibc's allocator: records and buffers are allocated on the
/// proxy's threads and freed on the audit writer's, a pattern glibc handles slowly
/// (`docs/performance.md`, audit append: +25 % with mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fetchgate::cli::main()
}

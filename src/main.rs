fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`engram inspect D | head`) instead of panicking on the broken pipe: Rust ignores SIGPIPE
    // by default, which turns the write into an error that `println!` panics on.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(engram_cli::main());
}

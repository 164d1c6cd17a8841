//! The `cds` binary: everything lives in the library; see `cds --help`.

fn main() -> std::process::ExitCode {
    cds_engine::cli::main()
}

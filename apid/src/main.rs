//! apid: Slate's API server. Started and restarted by init.

fn main() -> std::process::ExitCode {
    slate_apid::main()
}

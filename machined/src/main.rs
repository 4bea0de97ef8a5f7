//! machined: owns the machine config and (later) runs the node's services.
//! Started and restarted by init.

fn main() -> std::process::ExitCode {
    slate_machined::main()
}

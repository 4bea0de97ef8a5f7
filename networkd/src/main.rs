//! networkd: configures the node's network. See the library for the design.

fn main() -> std::process::ExitCode {
    slate_networkd::main()
}

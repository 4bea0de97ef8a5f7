//! slatectl, the only management interface of a Slate node. Talos users
//! should feel at home: contexts in a config file, `-e/--endpoints`,
//! `-n/--nodes`, `-o table|yaml|json`.

pub mod cmd;
pub mod connect;
pub mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "slatectl",
    version,
    about = "Manage Slate nodes through their API (gRPC over mutual TLS)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Client config file with contexts.
    #[arg(long, global = true, env = "SLATECONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Context to use instead of the config's current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// apid endpoints to connect to (host or host:port; default port 50000).
    #[arg(
        short = 'e',
        long,
        global = true,
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub endpoints: Vec<String>,
    /// Nodes to act on (host or host:port). Without --endpoints, each node is
    /// contacted directly.
    #[arg(
        short = 'n',
        long,
        global = true,
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub nodes: Vec<String>,
    /// Do not verify the node and present no client certificate: only for
    /// nodes in safe or maintenance mode, which answer only harmless calls.
    #[arg(short = 'i', long, global = true)]
    pub insecure: bool,
    /// With --insecure: trust only the node whose certificate has this
    /// SHA-256 fingerprint (as its console prints it, AB:CD:…); any other
    /// answer is refused before anything is sent.
    #[arg(long, global = true, value_name = "SHA256", requires = "insecure")]
    pub cert_fingerprint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the client's and the nodes' versions.
    Version(cmd::version::VersionArgs),
    /// List the processes of the nodes with their memory use.
    Processes(cmd::processes::ProcessesArgs),
    /// Generate configs and secrets.
    #[command(subcommand)]
    Gen(cmd::gen_config::GenCommand),
    /// Apply a machine config to the nodes (--insecure for a node in maintenance mode).
    ApplyConfig(cmd::apply_config::ApplyConfigArgs),
    /// Show the nodes' state: `get machineconfig`.
    Get(cmd::get::GetArgs),
    /// Reboot the nodes in order.
    Reboot,
    /// Power the nodes off in order.
    Shutdown,
    /// Manage client configs.
    #[command(subcommand)]
    Config(cmd::config_new::ConfigCommand),
    /// Check a machine config and print every problem with its line.
    Validate(cmd::validate::ValidateArgs),
    /// Work on machine config files.
    #[command(subcommand, name = "machineconfig", visible_alias = "mc")]
    MachineConfig(cmd::machineconfig::MachineConfigCommand),
    /// List the nodes' services with their state and health.
    Services(cmd::services::ServicesArgs),
    /// Show a service's state and events, or start, stop or restart it.
    Service(cmd::services::ServiceArgs),
    /// Print a service's output (-f to follow).
    Logs(cmd::services::LogsArgs),
    /// Print the kernel log (-f to follow).
    Dmesg(cmd::services::DmesgArgs),
    /// List the containers containerd runs (-k: Kubernetes' only).
    Containers(cmd::containers::ContainersArgs),
    /// List the images containerd holds (-k: Kubernetes' only).
    Images(cmd::containers::ContainersArgs),
    /// Start a new etcd cluster on one control-plane node; the others
    /// join it by themselves.
    Bootstrap,
    /// The etcd cluster: members, snapshot, leave, remove-member.
    #[command(subcommand)]
    Etcd(cmd::etcd::EtcdCommand),
    /// List the join tokens (`gen join-token` makes one).
    JoinTokens(cmd::join::ListArgs),
    /// Revoke a join token.
    #[command(subcommand)]
    JoinToken(cmd::join::TokenCommand),
    /// List the machines that registered with a join token.
    Machines(cmd::join::ListArgs),
    /// Accept, reject or forget a registered machine.
    #[command(subcommand)]
    Machine(cmd::join::MachineCommand),
    /// Get an admin kubeconfig from a control-plane node (merged into
    /// ~/.kube/config by default).
    Kubeconfig(cmd::kubeconfig::KubeconfigArgs),
    /// Write a release bundle into the inactive boot slot and reboot into
    /// it, one node at a time; it becomes good once the node is healthy.
    Upgrade(cmd::upgrade::UpgradeArgs),
    /// Boot the other (good) slot again, and reboot.
    Rollback,
    /// Leave etcd, wipe STATE and EPHEMERAL, and come back in maintenance
    /// mode.
    Reset(cmd::upgrade::ResetArgs),
    /// Print a shell completion script: `source <(slatectl completion bash)`.
    Completion(cmd::completion::CompletionArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Gen(cmd::gen_config::GenCommand::JoinToken(args)) => {
            block_on(cmd::join::gen_token(&cli.global, args))
        }
        Command::Gen(cmd) => cmd::gen_config::run(cmd),
        Command::Completion(args) => cmd::completion::run(&args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::MachineConfig(cmd) => cmd::machineconfig::run(cmd),
        Command::Version(args) => block_on(cmd::version::run(&cli.global, args)),
        Command::Processes(args) => block_on(cmd::processes::run(&cli.global, args)),
        Command::ApplyConfig(args) => block_on(cmd::apply_config::run(&cli.global, args)),
        Command::Get(args) => block_on(cmd::get::run(&cli.global, args)),
        Command::Reboot => block_on(cmd::power::run(&cli.global, cmd::power::Action::Reboot)),
        Command::Shutdown => block_on(cmd::power::run(&cli.global, cmd::power::Action::Shutdown)),
        Command::Config(cmd) => block_on(cmd::config_new::run(&cli.global, cmd)),
        Command::Services(args) => block_on(cmd::services::services(&cli.global, args)),
        Command::Service(args) => block_on(cmd::services::service(&cli.global, args)),
        Command::Logs(args) => block_on(cmd::services::logs(&cli.global, args)),
        Command::Dmesg(args) => block_on(cmd::services::dmesg(&cli.global, args)),
        Command::Containers(args) => block_on(cmd::containers::run(&cli.global, args)),
        Command::Images(args) => block_on(cmd::containers::images(&cli.global, args)),
        Command::Bootstrap => block_on(cmd::etcd::bootstrap(&cli.global)),
        Command::Etcd(cmd) => block_on(cmd::etcd::run(&cli.global, cmd)),
        Command::JoinTokens(args) => block_on(cmd::join::tokens(&cli.global, args)),
        Command::JoinToken(cmd) => block_on(cmd::join::token(&cli.global, cmd)),
        Command::Machines(args) => block_on(cmd::join::machines(&cli.global, args)),
        Command::Machine(cmd) => block_on(cmd::join::machine(&cli.global, cmd)),
        Command::Kubeconfig(args) => block_on(cmd::kubeconfig::run(&cli.global, args)),
        Command::Upgrade(args) => block_on(cmd::upgrade::upgrade(&cli.global, args)),
        Command::Rollback => block_on(cmd::upgrade::rollback(&cli.global)),
        Command::Reset(args) => block_on(cmd::upgrade::reset(&cli.global, args)),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    // One connection at a time needs no worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(f)
}

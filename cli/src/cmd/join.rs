//! Joining nodes by token (docs/join.md): `slatectl gen join-token`,
//! `join-tokens`, `join-token revoke ID`, `machines`, and
//! `machine accept|reject|forget ID`. Each call goes to one control-plane
//! node (`-n`, or the context's first endpoint), which keeps tokens and
//! registrations in the cluster's etcd.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde::Serialize;
use slate_client::Conn;
use slate_proto::join::join_service_client::JoinServiceClient;
use slate_proto::join::{
    AcceptMachineRequest, CreateTokenRequest, ForgetMachineRequest, JoinToken, ListMachinesRequest,
    ListTokensRequest, Machine, RejectMachineRequest, RevokeTokenRequest,
};

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Args)]
pub struct GenTokenArgs {
    /// The role machines joining with it get: worker or controlplane.
    #[arg(long, default_value = "worker")]
    pub role: String,
    /// How long the token is valid: 90s, 30m, 24h, 7d; 0 for ever.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Machines registering with it are accepted without `machine accept`.
    #[arg(long)]
    pub auto_accept: bool,
    /// A patch for the configs of its machines: @FILE or inline YAML.
    #[arg(long = "config-patch", value_name = "@FILE|PATCH")]
    pub config_patch: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Delete a token: registrations with it are refused from now on.
    Revoke {
        /// The token's id (the part before the dot).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Accept a pending machine: it gets its config at its next call.
    Accept {
        id: String,
        /// Its role, instead of its token's: worker or controlplane.
        #[arg(long)]
        role: Option<String>,
        /// A patch for its config (after the token's): @FILE or inline YAML.
        #[arg(long = "config-patch", value_name = "@FILE|PATCH")]
        config_patch: Option<String>,
    },
    /// Refuse a machine; it is told so and stays refused.
    Reject { id: String },
    /// Forget a machine: it may register again, with a new node key.
    Forget { id: String },
}

/// `90s`, `30m`, `24h`, `7d`, `0`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit, e.g. 90s, 30m, 24h, 7d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number, then s, m, h or d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// A patch argument's text (`@FILE` read), checked to be a patch.
fn patch_text(arg: Option<&str>) -> anyhow::Result<String> {
    let Some(arg) = arg else {
        return Ok(String::new());
    };
    let (name, text) = super::patch_args::read(arg, "--config-patch")?;
    slate_config::patch::Patch::parse(&text, &name)?;
    Ok(text)
}

async fn client(global: &Global, what: &str) -> anyhow::Result<(String, JoinServiceClient<Conn>)> {
    let session = connect::session(global)?;
    let target = session.single(what)?;
    let channel = session.connect_to(&target).await?;
    Ok((target.to_string(), JoinServiceClient::new(channel)))
}

fn refused(target: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{target}: {}", s.message())
}

#[derive(Debug, Serialize)]
struct NewToken {
    token: String,
    role: String,
    expires: String,
    auto_accept: bool,
    join_url: String,
    kernel_arg: String,
}

fn expiry(unix: u64) -> String {
    if unix == 0 {
        "never".into()
    } else {
        output::time_ms(i64::try_from(unix.saturating_mul(1000)).unwrap_or(i64::MAX))
    }
}

pub async fn gen_token(global: &Global, args: GenTokenArgs) -> anyhow::Result<ExitCode> {
    if slate_config::join::parse_role(&args.role).is_none() {
        bail!("--role {:?}: worker or controlplane", args.role);
    }
    let config_patch = patch_text(args.config_patch.as_deref())?;
    let (target, mut join) = client(global, "gen join-token").await?;
    let made = join
        .create_token(CreateTokenRequest {
            role: args.role,
            ttl_seconds: args.ttl.as_secs(),
            auto_accept: args.auto_accept,
            config_patch,
        })
        .await
        .map_err(|s| refused(&target, s))?
        .into_inner();
    let info = made.token.unwrap_or_default();
    let shown = NewToken {
        token: made.secret,
        role: info.role,
        expires: expiry(info.expires_unix),
        auto_accept: info.auto_accept,
        join_url: made.join_url,
        kernel_arg: made.kernel_arg,
    };
    match args.output {
        Format::Table => {
            println!("token:       {}", shown.token);
            println!("role:        {}", shown.role);
            println!("expires:     {}", shown.expires);
            println!("auto-accept: {}", shown.auto_accept);
            println!("join URL:    {}", shown.join_url);
            println!("kernel arg:  {}", shown.kernel_arg);
            eprintln!(
                "Boot a node with the kernel arg (slate-image --join URL --join-token TOKEN), \
                 or put it in its user-data; the token is shown only now."
            );
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Format::Yaml => print!("{}", slate_config::yaml::to_string(&shown)?),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct TokenRow {
    id: String,
    role: String,
    auto_accept: bool,
    created: String,
    expires: String,
    config_patch: String,
}

impl From<JoinToken> for TokenRow {
    fn from(t: JoinToken) -> Self {
        Self {
            id: t.id,
            role: t.role,
            auto_accept: t.auto_accept,
            created: expiry(t.created_unix),
            expires: expiry(t.expires_unix),
            config_patch: t.config_patch,
        }
    }
}

impl Rows for TokenRow {
    fn header() -> Vec<&'static str> {
        vec!["ID", "ROLE", "AUTO-ACCEPT", "CREATED", "EXPIRES", "PATCH"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.role.clone(),
            if self.auto_accept { "yes" } else { "no" }.into(),
            self.created.clone(),
            self.expires.clone(),
            if self.config_patch.trim().is_empty() {
                "-"
            } else {
                "yes"
            }
            .into(),
        ]
    }
}

pub async fn tokens(global: &Global, args: ListArgs) -> anyhow::Result<ExitCode> {
    let (target, mut join) = client(global, "join-tokens").await?;
    let list = join
        .list_tokens(ListTokensRequest {})
        .await
        .map_err(|s| refused(&target, s))?
        .into_inner();
    let rows: Vec<TokenRow> = list.tokens.into_iter().map(TokenRow::from).collect();
    output::print(args.output, &rows)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn token(global: &Global, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Revoke { id } = command;
    let (target, mut join) = client(global, "join-token revoke").await?;
    join.revoke_token(RevokeTokenRequest { id: id.clone() })
        .await
        .map_err(|s| refused(&target, s))?;
    println!("{target}: join token {id} revoked");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct MachineRow {
    id: String,
    state: String,
    role: String,
    hostname: String,
    addresses: Vec<String>,
    macs: Vec<String>,
    disks: Vec<String>,
    cpus: u32,
    memory: String,
    uuid: String,
    token: String,
    node_key: String,
    first_seen: String,
    last_seen: String,
    source: String,
}

impl From<Machine> for MachineRow {
    fn from(m: Machine) -> Self {
        Self {
            id: m.id,
            state: m.state,
            role: m.role,
            hostname: m.hostname,
            addresses: m.addresses,
            macs: m.macs,
            disks: m.disks,
            cpus: m.cpus,
            memory: output::mib(m.memory_bytes),
            uuid: m.uuid,
            token: m.token_id,
            node_key: m.key_fingerprint,
            first_seen: expiry(m.first_seen_unix),
            last_seen: expiry(m.last_seen_unix),
            source: m.source,
        }
    }
}

impl Rows for MachineRow {
    fn header() -> Vec<&'static str> {
        vec![
            "ID",
            "STATE",
            "ROLE",
            "HOSTNAME",
            "ADDRESSES",
            "CPUS",
            "MEMORY",
            "DISKS",
            "LAST SEEN",
        ]
    }

    fn row(&self) -> Vec<String> {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".into()
            } else {
                v.join(",")
            }
        };
        vec![
            self.id.clone(),
            self.state.clone(),
            self.role.clone(),
            self.hostname.clone(),
            list(&self.addresses),
            self.cpus.to_string(),
            self.memory.clone(),
            list(&self.disks),
            self.last_seen.clone(),
        ]
    }
}

pub async fn machines(global: &Global, args: ListArgs) -> anyhow::Result<ExitCode> {
    let (target, mut join) = client(global, "machines").await?;
    let list = join
        .list_machines(ListMachinesRequest {})
        .await
        .map_err(|s| refused(&target, s))?
        .into_inner();
    let rows: Vec<MachineRow> = list.machines.into_iter().map(MachineRow::from).collect();
    output::print(args.output, &rows)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn machine(global: &Global, command: MachineCommand) -> anyhow::Result<ExitCode> {
    match command {
        MachineCommand::Accept {
            id,
            role,
            config_patch,
        } => {
            if let Some(role) = &role
                && slate_config::join::parse_role(role).is_none()
            {
                bail!("--role {role:?}: worker or controlplane");
            }
            let config_patch = patch_text(config_patch.as_deref())?;
            let (target, mut join) = client(global, "machine accept").await?;
            let accepted = join
                .accept_machine(AcceptMachineRequest {
                    id: id.clone(),
                    role: role.unwrap_or_default(),
                    config_patch,
                })
                .await
                .map_err(|s| refused(&target, s))?
                .into_inner();
            let role = accepted.machine.map(|m| m.role).unwrap_or_default();
            println!(
                "{target}: machine {id} accepted as {role}; it gets its config at its next call"
            );
        }
        MachineCommand::Reject { id } => {
            let (target, mut join) = client(global, "machine reject").await?;
            join.reject_machine(RejectMachineRequest { id: id.clone() })
                .await
                .map_err(|s| refused(&target, s))?;
            println!("{target}: machine {id} rejected");
        }
        MachineCommand::Forget { id } => {
            let (target, mut join) = client(global, "machine forget").await?;
            join.forget_machine(ForgetMachineRequest { id: id.clone() })
                .await
                .map_err(|s| refused(&target, s))?;
            println!("{target}: machine {id} forgotten; it may register again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
        for bad in ["", "h", "10", "10y", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}

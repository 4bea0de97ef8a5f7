//! The kernel command line's `ip=` argument, in the kernel's own nfsroot
//! syntax (Documentation/admin-guide/nfs/nfsroot.rst), so the arguments people
//! already use with PXE and QEMU work unchanged:
//!
//! `ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>`
//!
//! plus the short forms `ip=dhcp|on|any` and `ip=off|none`. Slate's kernel has
//! no IP autoconfiguration built in, so networkd is the one that honours it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::hostname;
use crate::ipv4;

/// What the command line asks networkd to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    /// DHCPv4, on `device` or else the first Ethernet link. A hostname given
    /// in `ip=` wins over the one the DHCP server offers.
    Dhcp {
        device: Option<String>,
        hostname: Option<String>,
    },
    /// A fixed address.
    Static(StaticConfig),
    /// No automatic configuration: only loopback is brought up.
    Off,
}

impl Default for IpConfig {
    /// No `ip=` at all: DHCP on the first Ethernet link, which is what a node
    /// booted in a VM or on a plain LAN needs to become reachable.
    fn default() -> Self {
        IpConfig::Dhcp {
            device: None,
            hostname: None,
        }
    }
}

/// `ip=` with a client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub device: Option<String>,
    pub dns: Vec<Ipv4Addr>,
}

/// Why an `ip=` value was rejected; the value is quoted so the console line
/// alone tells the operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("reading kernel command line {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ip={value}: {field} {text:?} is not an IPv4 address")]
    BadAddress {
        value: String,
        field: &'static str,
        text: String,
    },
    #[error(
        "ip={value}: netmask {text:?} is neither a dotted contiguous mask nor a prefix length 0-32"
    )]
    BadNetmask { value: String, text: String },
    #[error("ip={value}: hostname {text:?} is not a valid hostname")]
    BadHostname { value: String, text: String },
    #[error(
        "ip={value}: unknown autoconf method {text:?} (expected off, none, static, dhcp, on, any)"
    )]
    BadAutoconf { value: String, text: String },
    #[error("ip={value}: too many fields ({count}, at most 10)")]
    TooManyFields { value: String, count: usize },
    #[error("ip={value}: autoconf {autoconf:?} needs a client address")]
    MissingAddress { value: String, autoconf: String },
}

/// Reads `path` (`/proc/cmdline` in production) and parses its `ip=`.
pub fn read(path: &Path) -> Result<IpConfig, CmdlineError> {
    let text = std::fs::read_to_string(path).map_err(|source| CmdlineError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_cmdline(&text)
}

/// Parses a whole command line. Like the kernel, the last `ip=` wins.
pub fn parse_cmdline(cmdline: &str) -> Result<IpConfig, CmdlineError> {
    match split_args(cmdline)
        .into_iter()
        .filter_map(|arg| arg.strip_prefix("ip=").map(str::to_owned))
        .next_back()
    {
        Some(value) => parse_ip(&value),
        None => Ok(IpConfig::default()),
    }
}

/// Splits like the kernel does: on whitespace, except inside double quotes
/// (which are removed).
fn split_args(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// Parses the value of one `ip=` argument.
pub fn parse_ip(value: &str) -> Result<IpConfig, CmdlineError> {
    match value {
        "dhcp" | "on" | "any" => return Ok(IpConfig::default()),
        "off" | "none" => return Ok(IpConfig::Off),
        _ => {}
    }
    let fields: Vec<&str> = value.split(':').collect();
    if fields.len() > 10 {
        return Err(CmdlineError::TooManyFields {
            value: value.to_owned(),
            count: fields.len(),
        });
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    let addr = |i: usize, name: &'static str| -> Result<Option<Ipv4Addr>, CmdlineError> {
        let text = field(i);
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| CmdlineError::BadAddress {
                value: value.to_owned(),
                field: name,
                text: text.to_owned(),
            })
    };

    let client = addr(0, "client-ip")?;
    // Field 1 (server-ip) only matters to NFS root; parsed to reject typos.
    addr(1, "server-ip")?;
    let gateway = addr(2, "gw-ip")?;
    let netmask = parse_netmask(value, field(3))?;
    let hostname = match field(4) {
        "" => None,
        h if hostname::is_valid(h) => Some(h.to_owned()),
        h => {
            return Err(CmdlineError::BadHostname {
                value: value.to_owned(),
                text: h.to_owned(),
            });
        }
    };
    let device = Some(field(5)).filter(|d| !d.is_empty()).map(str::to_owned);
    let autoconf = field(6);
    let dns: Vec<Ipv4Addr> = [addr(7, "dns0")?, addr(8, "dns1")?]
        .into_iter()
        .flatten()
        .collect();
    // Field 9 (ntp0) is for the time sync that networkd does not have yet.

    match (autoconf, client) {
        ("dhcp" | "on" | "any" | "bootp" | "both", _) | ("", None) => {
            Ok(IpConfig::Dhcp { device, hostname })
        }
        ("off" | "none" | "static" | "", Some(address)) => Ok(IpConfig::Static(StaticConfig {
            address,
            prefix_len: netmask.unwrap_or_else(|| ipv4::classful_prefix(address)),
            gateway,
            hostname,
            device,
            dns,
        })),
        ("off" | "none", None) => Ok(IpConfig::Off),
        ("static", None) => Err(CmdlineError::MissingAddress {
            value: value.to_owned(),
            autoconf: autoconf.to_owned(),
        }),
        (other, _) => Err(CmdlineError::BadAutoconf {
            value: value.to_owned(),
            text: other.to_owned(),
        }),
    }
}

fn parse_netmask(value: &str, text: &str) -> Result<Option<u8>, CmdlineError> {
    if text.is_empty() {
        return Ok(None);
    }
    let prefix = if let Ok(p) = text.parse::<u8>() {
        (p <= 32).then_some(p)
    } else {
        text.parse::<Ipv4Addr>().ok().and_then(ipv4::mask_to_prefix)
    };
    prefix.map(Some).ok_or_else(|| CmdlineError::BadNetmask {
        value: value.to_owned(),
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn dhcp() -> IpConfig {
        IpConfig::default()
    }

    #[test]
    fn valid_command_lines() {
        let cases: Vec<(&str, IpConfig)> = vec![
            ("console=ttyS0 quiet", dhcp()),
            ("", dhcp()),
            ("ip=dhcp", dhcp()),
            ("ip=on", dhcp()),
            ("ip=any", dhcp()),
            ("ip=off", IpConfig::Off),
            ("ip=none", IpConfig::Off),
            ("ip=off ip=dhcp", dhcp()),
            ("ip=dhcp ip=off", IpConfig::Off),
            ("ip=::::::off", IpConfig::Off),
            (
                "ip=:::::eth1:dhcp",
                IpConfig::Dhcp {
                    device: Some("eth1".into()),
                    hostname: None,
                },
            ),
            (
                "ip=::::node1::dhcp",
                IpConfig::Dhcp {
                    device: None,
                    hostname: Some("node1".into()),
                },
            ),
            (
                "root=/dev/sda ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:off:10.0.2.3:1.1.1.1 quiet",
                IpConfig::Static(StaticConfig {
                    address: ip("10.0.2.15"),
                    prefix_len: 24,
                    gateway: Some(ip("10.0.2.2")),
                    hostname: Some("node1".into()),
                    device: Some("eth0".into()),
                    dns: vec![ip("10.0.2.3"), ip("1.1.1.1")],
                }),
            ),
            (
                "ip=192.168.1.10::192.168.1.1:20",
                IpConfig::Static(StaticConfig {
                    address: ip("192.168.1.10"),
                    prefix_len: 20,
                    gateway: Some(ip("192.168.1.1")),
                    hostname: None,
                    device: None,
                    dns: vec![],
                }),
            ),
            (
                // No netmask: the kernel's classful default.
                "ip=172.16.5.4",
                IpConfig::Static(StaticConfig {
                    address: ip("172.16.5.4"),
                    prefix_len: 16,
                    gateway: None,
                    hostname: None,
                    device: None,
                    dns: vec![],
                }),
            ),
            (
                "\"ip=10.1.1.1:::32::::::\"",
                IpConfig::Static(StaticConfig {
                    address: ip("10.1.1.1"),
                    prefix_len: 32,
                    gateway: None,
                    hostname: None,
                    device: None,
                    dns: vec![],
                }),
            ),
        ];
        for (cmdline, want) in cases {
            let got = parse_cmdline(cmdline).unwrap_or_else(|e| panic!("{cmdline}: {e}"));
            assert_eq!(got, want, "{cmdline}");
        }
    }

    #[test]
    fn malformed_values_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("ip=10.0.2.300", "client-ip \"10.0.2.300\""),
            ("ip=10.0.2.15::gw:24", "gw-ip \"gw\""),
            ("ip=10.0.2.15:::33", "netmask \"33\""),
            ("ip=10.0.2.15:::255.0.255.0", "netmask \"255.0.255.0\""),
            ("ip=10.0.2.15::::bad_name!", "hostname \"bad_name!\""),
            ("ip=10.0.2.15::::::bogus", "autoconf method \"bogus\""),
            ("ip=::::::static", "needs a client address"),
            ("ip=10.0.2.15:::24::::10.0.2.x", "dns0 \"10.0.2.x\""),
            ("ip=1:2:3:4:5:6:7:8:9:10:11", "too many fields"),
            ("ip=dhcpp", "client-ip \"dhcpp\""),
        ];
        for (cmdline, want) in cases {
            let err = parse_cmdline(cmdline).expect_err(cmdline).to_string();
            assert!(err.contains(want), "{cmdline}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn reads_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmdline");
        std::fs::write(&path, "BOOT_IMAGE=/vmlinuz ip=off\n").unwrap();
        assert_eq!(read(&path).unwrap(), IpConfig::Off);
        let err = read(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, CmdlineError::Read { .. }));
    }
}

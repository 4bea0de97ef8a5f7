//! DHCPv6 client for stateful addresses and DNS: [`state`] is the protocol,
//! pure; [`client`] drives it with a UDP socket on port 546, the clock and
//! netlink. SLAAC (router advertisements) is left to the kernel, which
//! accepts them on every link by default.

pub mod client;
pub mod state;

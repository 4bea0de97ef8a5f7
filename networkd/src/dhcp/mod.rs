//! DHCPv4 client: [`state`] is the protocol, pure; [`client`] drives it with
//! a [`socket`], the clock and the [`crate::ipv4_setup::Applier`].

pub mod client;
pub mod lease;
pub mod links;
pub mod socket;
pub mod state;

#[cfg(test)]
mod tests;

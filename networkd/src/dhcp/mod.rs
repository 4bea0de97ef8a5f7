//! DHCPv4 client: [`state`] is the protocol, pure; [`client`] drives it with
//! a [`socket`], the clock and the [`crate::apply::Applier`].

pub mod client;
pub mod lease;
pub mod links;
pub mod socket;
pub mod state;

#[cfg(test)]
mod tests;

//! Generic netlink on rtnetlink's netlink-proto: requests of any family
//! on one connection, answers decoded by us, and the controller's family
//! lookup. The mesh's kernel WireGuard backend speaks family `wireguard`
//! through it.

use futures::{Stream, StreamExt as _};
use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, ParseableParametrized,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_proto::sys::SocketAddr as NetlinkAddr;
use netlink_proto::{ConnectionHandle, NetlinkProtoError};

pub use netlink_proto::sys::protocols::NETLINK_GENERIC;

/// Why a family id could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    #[error("sending the lookup")]
    Send(#[source] NetlinkProtoError),
    #[error("decoding the controller's answer")]
    Decode(#[source] DecodeError),
    /// ENOENT: no such family (for `wireguard`: the module is not loaded).
    #[error("no such generic netlink family")]
    Missing,
    #[error("the controller refused the lookup")]
    Kernel(#[source] std::io::Error),
    #[error("the controller answered without a family id")]
    NoId,
}

/// A generic netlink message as bytes (its generic header and attributes)
/// and its family id. One connection carries the controller's messages and
/// wireguard's, and the decoding is ours ([`request`]): an answer that does
/// not parse is then an error, where netlink-proto would log and drop it.
#[derive(Debug)]
pub struct RawGenl {
    family: u16,
    bytes: Vec<u8>,
}

impl netlink_packet_core::NetlinkSerializable for RawGenl {
    fn message_type(&self) -> u16 {
        self.family
    }

    fn buffer_len(&self) -> usize {
        self.bytes.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.bytes);
    }
}

impl NetlinkDeserializable for RawGenl {
    type Error = std::convert::Infallible;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Ok(RawGenl {
            family: header.message_type,
            bytes: payload.to_vec(),
        })
    }
}

/// `genl` as a netlink request of family `family` (unless the payload's
/// family has a fixed id, as the controller's has), lengths and type set.
pub fn raw_request<F>(mut genl: GenlMessage<F>, family: u16, flags: u16) -> NetlinkMessage<RawGenl>
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    if genl.family_id() == 0 {
        genl.set_resolved_family_id(family);
    }
    let mut bytes = vec![0; genl.buffer_len()];
    genl.emit(&mut bytes);
    let raw = RawGenl {
        family: genl.family_id(),
        bytes,
    };
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(raw));
    nl.header.flags = flags;
    nl.finalize();
    nl
}

/// Sends `genl` and decodes the answers as `F`.
pub fn request<F>(
    handle: &ConnectionHandle<RawGenl>,
    genl: GenlMessage<F>,
    family: u16,
    flags: u16,
) -> Result<
    impl Stream<Item = Result<NetlinkMessage<GenlMessage<F>>, DecodeError>> + use<F>,
    NetlinkProtoError,
>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let answers = handle.request(raw_request(genl, family, flags), NetlinkAddr::new(0, 0))?;
    Ok(answers.map(|answer| {
        let (header, payload) = answer.into_parts();
        let payload = match payload {
            NetlinkPayload::InnerMessage(raw) => NetlinkPayload::InnerMessage(
                GenlMessage::<F>::parse_with_param(&raw.bytes, raw.family)?,
            ),
            NetlinkPayload::Done(m) => NetlinkPayload::Done(m),
            NetlinkPayload::Error(m) => NetlinkPayload::Error(m),
            NetlinkPayload::Overrun(m) => NetlinkPayload::Overrun(m),
            _ => NetlinkPayload::Noop,
        };
        Ok(NetlinkMessage::new(header, payload))
    }))
}

/// The id of the generic netlink family `name`, asked of the controller
/// (`CTRL_CMD_GETFAMILY`).
///
/// Ours rather than the `genetlink` crate's resolver: genetlink 0.3 brought
/// a second netlink stack into slated (netlink-proto 0.13 beside
/// rtnetlink's 0.14, and thiserror 1 beside 2), and the root image is held
/// to a hard budget (`ROOTFS_BUDGET` in image/src/lib.rs). This is the one
/// thing genetlink did for us.
pub async fn resolve_family(
    handle: &ConnectionHandle<RawGenl>,
    name: &str,
) -> Result<u16, FamilyError> {
    let mut ctrl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    });
    ctrl.finalize();
    let mut answers = request(handle, ctrl, 0, NLM_F_REQUEST).map_err(FamilyError::Send)?;
    let mut id = None;
    while let Some(answer) = answers.next().await {
        match answer.map_err(FamilyError::Decode)?.payload {
            NetlinkPayload::InnerMessage(m) => id = id.or(family_id(&m.payload)),
            NetlinkPayload::Error(e) => match e.code.map(|c| c.get().abs()) {
                Some(libc::ENOENT) => return Err(FamilyError::Missing),
                Some(_) => return Err(FamilyError::Kernel(e.to_io())),
                None => {}
            },
            _ => {}
        }
    }
    id.ok_or(FamilyError::NoId)
}

pub fn family_id(answer: &GenlCtrl) -> Option<u16> {
    answer.nlas.iter().find_map(|a| match a {
        GenlCtrlAttrs::FamilyId(id) => Some(*id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_lookup_goes_to_the_controller_and_reads_the_id() {
        let mut ctrl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        ctrl.finalize();
        // The controller's id is fixed: the family passed is not used.
        let msg = raw_request(ctrl, 0x20, NLM_F_REQUEST);
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert_eq!(&buf[4..6], &0x10u16.to_ne_bytes(), "GENL_ID_CTRL");
        assert_eq!(buf[16], 3, "CTRL_CMD_GETFAMILY");

        // The answer, as the kernel would send it, decoded as `request` does.
        let mut answer = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName("wireguard".into()),
                GenlCtrlAttrs::FamilyId(0x1b),
            ],
        });
        answer.finalize();
        let mut bytes = vec![0; answer.buffer_len()];
        answer.emit(&mut bytes);
        let back = GenlMessage::<GenlCtrl>::parse_with_param(&bytes, 0x10).unwrap();
        assert_eq!(family_id(&back.payload), Some(0x1b));

        let idless = GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        };
        assert_eq!(family_id(&idless), None);
    }

    /// The lookup against this kernel's controller: an id where WireGuard
    /// is there, Missing where it is not (this build machine).
    #[tokio::test]
    async fn the_family_lookup_asks_the_kernel() {
        let (connection, genl, _) = netlink_proto::new_connection(NETLINK_GENERIC).unwrap();
        let connection = tokio::spawn(connection);
        match resolve_family(&genl, "wireguard").await {
            // Dynamic ids come after the controller's.
            Ok(id) => assert!(id > 0x10, "{id}"),
            Err(FamilyError::Missing) => {}
            Err(e) => panic!("{e}"),
        }
        // The controller knows itself.
        assert_eq!(resolve_family(&genl, "nlctrl").await.unwrap(), 0x10);
        connection.abort();
    }
}

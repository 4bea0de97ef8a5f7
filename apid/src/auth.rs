//! Who may call what: the role comes from the client certificate's
//! Organization, and each RPC names the least role it needs.

use slate_pki::{self as pki, Role};
use tonic::{Request, Status};

/// What an RPC requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A client certificate with at least this role.
    Role(Role),
    /// Like `Role`, and also answered in maintenance mode without a
    /// certificate: calls that reveal nothing secret, and apply-config,
    /// which is how an unconfigured node gets its config.
    RoleOrMaintenance(Role),
}

/// Checks `request` against `access`. `maintenance` is the reason apid is
/// in maintenance mode, if it is; `ca_der` the machine CA clients must
/// hold a certificate of (checked again here: a connection may have been
/// accepted under an earlier config's CA).
pub fn authorize<T>(
    request: &Request<T>,
    access: Access,
    maintenance: Option<&str>,
    ca_der: Option<&[u8]>,
) -> Result<(), Status> {
    if let Some(reason) = maintenance {
        return match access {
            Access::RoleOrMaintenance(_) => Ok(()),
            Access::Role(_) => Err(Status::failed_precondition(format!(
                "the node is in maintenance mode ({reason}); only version, processes and \
                 apply-config are available"
            ))),
        };
    }
    let (Access::Role(needed) | Access::RoleOrMaintenance(needed)) = access;
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    if let Some(ca) = ca_der
        && !pki::issued_by(leaf, ca)
    {
        return Err(Status::unauthenticated(
            "the client certificate is not from this node's machine CA",
        ));
    }
    let role = pki::role_of(leaf)
        .map_err(|e| Status::permission_denied(format!("client certificate: {e}")))?;
    if role.allows(needed) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "role {role} may not make this call (needs {needed})"
        )))
    }
}

//! Who may call what: the role comes from the client certificate's
//! Organization, and each RPC names the least role it needs.

use slate_machinery::pki::{self, Role};
use tonic::{Request, Status};

/// What an RPC requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A client certificate with at least this role.
    Role(Role),
    /// Like `Role`, and also answered in safe mode without a certificate,
    /// because the answer reveals nothing secret.
    RoleOrSafeMode(Role),
}

/// Checks `request` against `access`. `safe_mode` is the reason apid is in
/// safe mode, if it is.
pub fn authorize<T>(
    request: &Request<T>,
    access: Access,
    safe_mode: Option<&str>,
) -> Result<(), Status> {
    if let Some(reason) = safe_mode {
        return match access {
            Access::RoleOrSafeMode(_) => Ok(()),
            Access::Role(_) => Err(Status::failed_precondition(format!(
                "the node is in safe mode ({reason}); only version is available"
            ))),
        };
    }
    let (Access::Role(needed) | Access::RoleOrSafeMode(needed)) = access;
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
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

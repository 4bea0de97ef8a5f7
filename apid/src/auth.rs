//! Who may call what: the role comes from the client certificate's
//! Organization, and [`RULES`] names the least role each RPC needs. The
//! [`crate::gate`] checks every request against it before any handler
//! runs, so a method nobody listed is refused, not served by default.

use slate_common::constants::{NODE_HEADER, ROLE_HEADER};
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

/// Every method apid serves and what it needs: the one table the gate
/// enforces and the role-matrix test reads.
pub const RULES: &[(&str, Access)] = &[
    (
        "/slate.machine.v1.MachineService/Version",
        Access::RoleOrMaintenance(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/Processes",
        Access::RoleOrMaintenance(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/ApplyConfiguration",
        Access::RoleOrMaintenance(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/GetMachineConfig",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/GenerateClientConfiguration",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/Reboot",
        Access::Role(Role::Operator),
    ),
    (
        "/slate.machine.v1.MachineService/Shutdown",
        Access::Role(Role::Operator),
    ),
    (
        "/slate.machine.v1.MachineService/ServiceList",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/ServiceAction",
        Access::Role(Role::Operator),
    ),
    (
        "/slate.machine.v1.MachineService/Logs",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/Dmesg",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/Bootstrap",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/EtcdMembers",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/EtcdSnapshot",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/EtcdLeave",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/EtcdRemoveMember",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/Containers",
        Access::Role(Role::Reader),
    ),
    // A kubeconfig of system:masters is the whole cluster.
    (
        "/slate.machine.v1.MachineService/Kubeconfig",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/StaticPods",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/Images",
        Access::Role(Role::Reader),
    ),
    // Replacing the OS, choosing its slot, and wiping its disk: admins.
    (
        "/slate.machine.v1.MachineService/Upgrade",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/Rollback",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.machine.v1.MachineService/BootSlots",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.machine.v1.MachineService/Reset",
        Access::Role(Role::Admin),
    ),
    // The resource types answered in maintenance mode are narrowed
    // further by [`MAINTENANCE_TYPES`].
    (
        "/slate.resource.v1.ResourceService/List",
        Access::RoleOrMaintenance(Role::Reader),
    ),
    (
        "/slate.resource.v1.ResourceService/Watch",
        Access::RoleOrMaintenance(Role::Reader),
    ),
    // Join tokens are credentials: only admins make, list or revoke them.
    (
        "/slate.join.v1.JoinService/CreateToken",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.join.v1.JoinService/ListTokens",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.join.v1.JoinService/RevokeToken",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.join.v1.JoinService/ListMachines",
        Access::Role(Role::Reader),
    ),
    (
        "/slate.join.v1.JoinService/AcceptMachine",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.join.v1.JoinService/RejectMachine",
        Access::Role(Role::Admin),
    ),
    (
        "/slate.join.v1.JoinService/ForgetMachine",
        Access::Role(Role::Admin),
    ),
    // Reflection describes only the public proto, but it is no reason to
    // answer strangers on a configured node.
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::RoleOrMaintenance(Role::Reader),
    ),
];

/// `GetMachineConfig` with `show_secrets` needs more than the call itself.
pub const SHOW_SECRETS: Access = Access::Role(Role::Admin);

/// The resource types answered without a certificate in maintenance mode,
/// as the proto says: what someone configuring the node needs to see.
pub const MAINTENANCE_TYPES: &[&str] = &["links", "addresses", "routes"];

/// The rule for a request path, `None` for a method apid does not list.
pub fn access_for(path: &str) -> Option<Access> {
    RULES.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// The caller's certificate (the first the TLS peer showed).
pub fn peer_leaf<T>(request: &Request<T>) -> Result<Vec<u8>, Status> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.to_vec()))
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))
}

/// An HTTP request's caller as gRPC sees it, for the checks made before a
/// handler runs (the gate, the proxy): its headers as metadata, and the
/// peer certificates tonic put in its extensions for the connection.
pub fn caller_of<B>(request: &http::Request<B>) -> Request<()> {
    let mut probe = http::Request::new(());
    *probe.extensions_mut() = request.extensions().clone();
    *probe.headers_mut() = request.headers().clone();
    Request::from_http(probe)
}

/// The caller's role: its certificate's, or, for a control-plane apid
/// forwarding a call (a certificate of the machine CA with the
/// Organization `os:impersonator`, which only holders of the CA key sign),
/// the role it names for its own caller in [`ROLE_HEADER`]. A forwarded
/// call that asks to be forwarded again is refused: one hop only.
pub fn caller_role<T>(request: &Request<T>, leaf: &[u8]) -> Result<Role, Status> {
    if !pki::is_impersonator(leaf) {
        return pki::role_of(leaf)
            .map_err(|e| Status::permission_denied(format!("client certificate: {e}")));
    }
    if request.metadata().get(NODE_HEADER).is_some() {
        return Err(Status::permission_denied(
            "a forwarded call is not forwarded again",
        ));
    }
    let named = request
        .metadata()
        .get(ROLE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::permission_denied("a forwarded call names no caller's role"))?;
    named
        .parse::<Role>()
        .map_err(|e| Status::permission_denied(format!("forwarded call: {e}")))
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
    let leaf = peer_leaf(request)?;
    if let Some(ca) = ca_der
        && !pki::issued_by(&leaf, ca)
    {
        return Err(Status::unauthenticated(
            "the client certificate is not from this node's machine CA",
        ));
    }
    let role = caller_role(request, &leaf)?;
    if role.allows(needed) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "role {role} may not make this call (needs {needed})"
        )))
    }
}

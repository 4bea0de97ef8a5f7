//! Slate's gRPC API, generated from `proto/` at build time.

/// `slate.machine.v1`: calls about the node itself.
pub mod machine {
    tonic::include_proto!("slate.machine.v1");
}

/// `slate.resource.v1`: typed state (links, addresses, routes, …).
pub mod resource {
    tonic::include_proto!("slate.resource.v1");
}

/// `slate.trust.v1`: server certificates signed by the holder of the
/// machine CA key (machined, for apid).
pub mod trust {
    tonic::include_proto!("slate.trust.v1");
}

/// `slate.join.v1`: join tokens and registered machines.
pub mod join {
    tonic::include_proto!("slate.join.v1");
}

/// Encoded `FileDescriptorSet` of every Slate proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/slate_descriptor.bin"));

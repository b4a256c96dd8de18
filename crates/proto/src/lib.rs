//! fargo's versioned public API (`proto/`), generated at build time.
//!
//! Every service also exposes [`FILE_DESCRIPTOR_SET`] through server reflection, so
//! `grpcurl` works without local copies of the protos.

/// Encoded `FileDescriptorSet` of every fargo proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fargo_descriptor.bin"));

pub mod thumbnail {
    pub mod v1 {
        tonic::include_proto!("fargo.thumbnail.v1");
    }
}

pub mod coinvalue {
    pub mod v1 {
        tonic::include_proto!("fargo.coinvalue.v1");
    }
}

pub mod testing {
    pub mod v1 {
        tonic::include_proto!("fargo.testing.v1");
    }
}

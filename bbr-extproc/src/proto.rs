//! Generated Envoy protobuf types and the `ExternalProcessor` gRPC service
//! (server side only), nested by proto package. Every `bytes` field is a
//! [`bytes::Bytes`].
//!
//! The code is checked in under `src/generated/` (no protox or
//! tonic-prost-build in any build of this crate); `tests/generated_code.rs`
//! generates it again from the vendored protos and fails on any difference.

#![allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]

/// `envoy.*` packages.
pub mod envoy {
    /// `envoy.config.*`
    pub mod config {
        /// `envoy.config.core`
        pub mod core {
            /// `envoy.config.core.v3`
            pub mod v3 {
                include!("generated/envoy.config.core.v3.rs");
            }
        }
    }
    /// `envoy.r#type.*`
    pub mod r#type {
        /// `envoy.type.v3`
        pub mod v3 {
            include!("generated/envoy.r#type.v3.rs");
        }
    }
    /// `envoy.extensions.*`
    pub mod extensions {
        /// `envoy.extensions.filters`
        pub mod filters {
            /// `envoy.extensions.filters.http`
            pub mod http {
                /// `envoy.extensions.filters.http.ext_proc`
                pub mod ext_proc {
                    /// `envoy.extensions.filters.http.ext_proc.v3`
                    pub mod v3 {
                        include!("generated/envoy.extensions.filters.http.ext_proc.v3.rs");
                    }
                }
            }
        }
    }
    /// `envoy.service.*`
    pub mod service {
        /// `envoy.service.ext_proc`
        pub mod ext_proc {
            /// `envoy.service.ext_proc.v3`
            pub mod v3 {
                include!("generated/envoy.service.ext_proc.v3.rs");
            }
        }
    }
}

/// `xds.*` packages.
pub mod xds {
    /// `xds.core`
    pub mod core {
        /// `xds.core.v3`
        pub mod v3 {
            include!("generated/xds.core.v3.rs");
        }
    }
}

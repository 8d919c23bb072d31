//! Generated Envoy protobuf types and the `ExternalProcessor` gRPC service,
//! nested by proto package. Every `bytes` field is a [`bytes::Bytes`].

#![allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]

/// `envoy.*` packages.
pub mod envoy {
    /// `envoy.config.*`
    pub mod config {
        /// `envoy.config.core`
        pub mod core {
            /// `envoy.config.core.v3`
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    /// `envoy.r#type.*`
    pub mod r#type {
        /// `envoy.type.v3`
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
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
                        tonic::include_proto!("envoy.extensions.filters.http.ext_proc.v3");
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
                tonic::include_proto!("envoy.service.ext_proc.v3");
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
            tonic::include_proto!("xds.core.v3");
        }
    }
}

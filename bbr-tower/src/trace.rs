//! Optional events (feature `tracing`). They carry the model name, error
//! kinds and byte offsets only, never body content.

/// `tracing::debug!` with the `tracing` feature, nothing without it.
macro_rules! debug_event {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::debug!($($arg)*);
        }
    };
}

/// `tracing::warn!` with the `tracing` feature, nothing without it: for
/// what an operator must act on (a spool directory that cannot be written).
macro_rules! warn_event {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::warn!($($arg)*);
        }
    };
}

pub(crate) use {debug_event, warn_event};

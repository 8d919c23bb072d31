//! Optional debug events (feature `tracing`). They carry the model name,
//! error kinds and byte offsets only, never body content.

/// `tracing::debug!` with the `tracing` feature, nothing without it.
macro_rules! debug_event {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::debug!($($arg)*);
        }
    };
}

pub(crate) use debug_event;

//! Log timestamps by `--zap-time-encoding` (the `server` feature).

use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime as Rfc3339};

/// The timestamp format of every log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// `rfc3339`, `rfc3339nano`, `iso8601` (the default): RFC 3339 UTC.
    Rfc3339,
    /// `epoch`: seconds since 1970 with a fraction.
    Epoch,
    /// `millis`: milliseconds since 1970.
    Millis,
    /// `nano`: nanoseconds since 1970.
    Nano,
}

impl Timer {
    /// From a `--zap-time-encoding` value clap has already validated.
    pub(crate) fn from_zap(encoding: Option<&str>) -> Self {
        match encoding {
            Some("epoch") => Timer::Epoch,
            Some("millis") => Timer::Millis,
            Some("nano") => Timer::Nano,
            _ => Timer::Rfc3339,
        }
    }
}

impl FormatTime for Timer {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match self {
            Timer::Rfc3339 => Rfc3339.format_time(w),
            Timer::Epoch => write!(w, "{:.6}", since_epoch.as_secs_f64()),
            Timer::Millis => write!(w, "{}", since_epoch.as_millis()),
            Timer::Nano => write!(w, "{}", since_epoch.as_nanos()),
        }
    }
}

//! bbr-adapters (being written).

//! bbr-axum-example (being written).

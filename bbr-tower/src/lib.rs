//! bbr-tower (being written).

//! `bbr-axum-example`: the gateway binary. Without `--config` it runs the
//! reference scenario (simulated pools on loopback).
fn main() {}

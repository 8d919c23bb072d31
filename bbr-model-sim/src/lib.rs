//! bbr-model-sim (being written).

//! bbr-extproc (being written).

//! Forms and compressed bodies through `BodyExtractor`, cut by the input's
//! header bytes: the verdict must not depend on the cuts. See
//! `bbr_fuzz::check_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_body(data));

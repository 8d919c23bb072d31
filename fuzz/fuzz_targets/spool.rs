//! Holds, write completions and write failures through
//! `bbr_core::spool::Spool`: what comes back is what went in, in order,
//! within bounded memory. See `bbr_fuzz::check_spool`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_spool(data));

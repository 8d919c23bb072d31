//! What a client sends to the form endpoints, generated: the pieces of a
//! `multipart/form-data` upload, so a test or a load run can stream a form
//! of any size (the file made chunk by chunk, never held whole) and compare
//! the simulator's answer (`file.bytes`, `file.sha256`) with what it sent.
//!
//! ```
//! use bbr_model_sim::upload;
//!
//! let form = [
//!     upload::part_head("b", "model", None),
//!     b"whisper-1\r\n".to_vec(),
//!     upload::part_head("b", "file", Some("a.wav")),
//!     upload::file_chunk(0, 16),
//!     b"\r\n".to_vec(),
//!     upload::closing("b"),
//! ]
//! .concat();
//! assert!(form.starts_with(b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n"));
//! assert!(form.ends_with(b"\r\n--b--\r\n"));
//! ```

use std::io::Write;

/// The delimiter and headers that open a part: `--boundary`, its
/// `Content-Disposition` (with `filename` and an `audio/wav` type for a
/// file part) and the blank line.
pub fn part_head(boundary: &str, name: &str, filename: Option<&str>) -> Vec<u8> {
    let mut head = Vec::new();
    write!(
        head,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
    )
    .expect("writing to a Vec");
    if let Some(filename) = filename {
        write!(head, "; filename=\"{filename}\"\r\nContent-Type: audio/wav")
            .expect("writing to a Vec");
    }
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// The closing delimiter, `--boundary--` and its line end.
pub fn closing(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--\r\n").into_bytes()
}

/// The `index`-th `len`-byte chunk of a generated file: every high byte
/// value (0x80..=0xff, so no CR, LF or `-`: no delimiter can appear in it),
/// the same for the same index, different between neighbours.
///
/// ```
/// let chunk = bbr_model_sim::upload::file_chunk(3, 1024);
/// assert_eq!(chunk.len(), 1024);
/// assert!(chunk.iter().all(|&b| b >= 0x80));
/// assert_eq!(chunk, bbr_model_sim::upload::file_chunk(3, 1024));
/// assert_ne!(chunk, bbr_model_sim::upload::file_chunk(4, 1024));
/// ```
pub fn file_chunk(index: u64, len: usize) -> Vec<u8> {
    let start = index * len as u64;
    (0..len as u64)
        .map(|j| ((start + j).wrapping_mul(2_654_435_761) >> 11) as u8 | 0x80)
        .collect()
}

//! The `spool` target: `bbr_core::spool::Spool` driven as an adapter drives
//! it, with holds, write completions and write failures chosen by the input.
//!
//! Input: two bytes of memory threshold (little endian), one byte for the
//! read size (`b + 1` bytes under 16, else `b` KiB; at least 4 KiB for a
//! file over 64 KiB), then one byte per step, its top two
//! bits the kind and the low six its argument:
//!
//! - `00`: hold a chunk of 0–63 bytes;
//! - `01`: hold a chunk of 1–64 KiB;
//! - `10`: the write that is out completes (it runs);
//! - `11`: the write that is out fails (`SpoolWrite::fail`), when the
//!   argument is odd; otherwise it completes.
//!
//! The driver starts the next write as soon as none is out and chunks wait
//! (an adapter's rule), and before a hold it completes the write that is out
//! when `must_wait` says so (the back-pressure an adapter obeys). Checked:
//! bytes kept in memory never exceed the threshold and all come before the
//! first spooled one; the spool's memory cost stays within two writes and a
//! coalescing buffer; a failed write is reported once; at the end, memory,
//! then the file read back, then the unwritten chunks, is exactly what went
//! in, in order.

use bbr_core::spool::{
    Hold, SPOOL_CHUNK_OVERHEAD, SPOOL_COALESCE_BELOW, SPOOL_COALESCE_BYTES, Spool, SpoolConfig,
    SpoolError, SpoolWrite,
};
use bytes::Bytes;

/// Largest chunk one step holds.
const MAX_CHUNK: usize = 64 << 10;

/// At most this many bytes go through one run (keeps the temp files small).
const MAX_TOTAL: usize = 1 << 20;

/// The byte at `position` of the generated body: no short period, so a
/// reordering of equal-length chunks shows.
fn byte_at(position: usize) -> u8 {
    ((position as u64).wrapping_mul(2_654_435_761) >> 13) as u8
}

fn chunk(from: usize, len: usize) -> Bytes {
    (from..from + len).map(byte_at).collect::<Vec<u8>>().into()
}

/// What the spool's memory cost may reach under the adapter's rules: the
/// write that is out and the chunks behind it (each under a coalescing
/// buffer plus one chunk), a buffer's spare capacity, and a handle per
/// waiting chunk.
fn memory_bound() -> u64 {
    let behind = (SPOOL_COALESCE_BYTES + MAX_CHUNK) as u64;
    let handles = 2 * (behind / SPOOL_COALESCE_BELOW as u64 + 2);
    2 * behind + SPOOL_COALESCE_BYTES as u64 + handles * SPOOL_CHUNK_OVERHEAD
}

/// The spool under test and the write that is out.
struct Driver {
    spool: Spool,
    out: Option<SpoolWrite>,
}

impl Driver {
    /// Starts the next write when none is out.
    fn start(&mut self) {
        if self.out.is_none() {
            self.out = self.spool.next_write();
        }
        assert_eq!(self.out.is_some(), self.spool.is_writing());
    }

    /// Completes (or fails) the write that is out; false once the spool
    /// failed.
    fn complete(&mut self, fail: bool) -> bool {
        let Some(job) = self.out.take() else {
            return true;
        };
        let done = if fail {
            job.fail(std::io::Error::other("injected write failure"))
        } else {
            job.run()
        };
        match self.spool.write_done(done) {
            Ok(()) => {
                assert!(!fail, "an injected failure was not reported");
                true
            }
            Err(SpoolError::Write(_)) if fail => false,
            Err(error) => panic!("unexpected spool error: {error}"),
        }
    }
}

/// Runs one input; panics when the spool breaks its contract.
pub fn check_spool(data: &[u8]) {
    let [t0, t1, read, steps @ ..] = data else {
        return;
    };
    let threshold = u64::from(u16::from_le_bytes([*t0, *t1]));
    let read = match usize::from(*read) {
        small @ 0..16 => small + 1,
        kib => kib << 10,
    };
    let mut driver = Driver {
        spool: Spool::new(
            SpoolConfig::new()
                .with_memory_threshold(threshold)
                .with_dir(std::env::temp_dir()),
        ),
        out: None,
    };
    let mut memory = Vec::new();
    let mut sent = 0usize;
    for &step in steps {
        let arg = usize::from(step & 0x3f);
        match step >> 6 {
            kind @ (0 | 1) => {
                let len = if kind == 0 { arg } else { (arg + 1) << 10 };
                if sent + len > MAX_TOTAL {
                    break;
                }
                if driver.spool.must_wait() {
                    if !driver.complete(false) {
                        return;
                    }
                    driver.start();
                }
                let spooling = driver.spool.is_spooling();
                let would = driver.spool.would_spool(len);
                match driver.spool.hold(chunk(sent, len)) {
                    Hold::Memory(bytes) => {
                        assert!(!spooling && !would, "memory after the spool started");
                        assert_eq!(bytes.len(), len);
                        memory.extend_from_slice(&bytes);
                        assert!(memory.len() as u64 <= threshold, "past the threshold");
                    }
                    Hold::Spooled => assert!(would, "spooled though would_spool said no"),
                }
                sent += len;
            }
            2 => {
                if !driver.complete(false) {
                    return;
                }
            }
            _ => {
                if !driver.complete(arg % 2 == 1) {
                    // The spool is unusable now; nothing more to compare.
                    return;
                }
            }
        }
        driver.start();
        let cost = driver.spool.memory_cost();
        assert!(
            cost <= memory_bound(),
            "memory cost {cost} past {}",
            memory_bound()
        );
    }
    assert!(driver.complete(false));
    let taken = driver.spool.taken_bytes();
    assert_eq!(taken, (sent - memory.len()) as u64);
    let spooled = driver.spool.spooled_bytes();
    let (file, rest) = driver.spool.into_parts();
    let mut all = memory;
    if let Some(mut file) = file {
        assert_eq!(file.len(), spooled);
        let read = if file.len() > 64 << 10 {
            read.max(4096)
        } else {
            read
        };
        while let Some(piece) = file.read_chunk(read).expect("the spool file reads back") {
            assert!(!piece.is_empty() && piece.len() <= read);
            all.extend_from_slice(&piece);
        }
    } else {
        assert_eq!(spooled, 0);
    }
    for piece in rest {
        all.extend_from_slice(&piece);
    }
    assert_eq!(all.len(), sent, "bytes lost or added");
    assert!(
        all.iter().enumerate().all(|(i, b)| *b == byte_at(i)),
        "bytes out of order"
    );
}

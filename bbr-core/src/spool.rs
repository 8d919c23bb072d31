//! A disk spool for the body bytes an adapter holds before its routing
//! decision, so a `model` that comes late (a form field after a 256 MiB
//! file) costs disk, not memory.
//!
//! Bytes only, std only: no http, no runtime. [`Spool`] is the synchronous
//! state machine of the holding phase: it says which bytes stay in memory
//! (up to a per-request threshold) and which go to disk, batches the latter
//! into [`SpoolWrite`] jobs, and takes their results back. An adapter runs
//! each job where blocking is allowed (tokio's `spawn_blocking`, a thread),
//! at most one at a time per request, and reads the file back after the
//! decision with [`SpoolRead`] jobs, again off its event loop.
//!
//! # When a copy happens
//!
//! Bytes kept in memory (before the threshold) are never copied here: the
//! caller holds them as they came. Spooled bytes are copied, exactly:
//!
//! - a spooled chunk shorter than [`SPOOL_COALESCE_BELOW`] is copied into a
//!   [`SPOOL_COALESCE_BYTES`] buffer (so a client sending tiny frames does
//!   not cost a handle per frame); larger chunks are kept as they are until
//!   written;
//! - every spooled byte is copied to the file (a `write`), and back from
//!   it into a fresh buffer of at most [`SPOOL_READ_BYTES`] (a `read`), once.
//!
//! Chunks still waiting for their write when the decision comes are not
//! written: they are handed back ([`Spool::into_parts`]) and forwarded from
//! memory after the file.
//!
//! # The file
//!
//! One anonymous file per request that passes its threshold, created with
//! [`create_new`](std::fs::OpenOptions::create_new) in the configured
//! directory ([`std::env::temp_dir`] by default) and, on Unix, unlinked at
//! once (mode `0600`): nothing is left behind, even if the process is
//! killed. Elsewhere it is removed when the [`SpoolFile`] drops.
//!
//! ```
//! use bbr_core::spool::{Hold, Spool, SpoolConfig, SpoolRead};
//! use bytes::Bytes;
//!
//! let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(4));
//! assert!(matches!(spool.hold(Bytes::from_static(b"abc")), Hold::Memory(_)));
//! // Past the threshold: to disk.
//! assert!(matches!(spool.hold(Bytes::from_static(b"defgh")), Hold::Spooled));
//! let job = spool.next_write().expect("a write to run");
//! let done = job.run(); // blocking: off the event loop in an adapter
//! spool.write_done(done)?;
//! assert_eq!(spool.spooled_bytes(), 5);
//! let (file, rest) = spool.into_parts();
//! let file = file.expect("a file");
//! assert!(rest.is_empty());
//! let (file, read) = SpoolRead::new(file).run(); // blocking, too
//! assert_eq!(&read?.unwrap()[..], b"defgh");
//! assert!(SpoolRead::new(file).run().1?.is_none());
//! # Ok::<(), bbr_core::spool::SpoolError>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

/// Default bytes of one request held in memory before the rest of what it
/// holds goes to disk: 4 MiB.
pub const DEFAULT_SPOOL_THRESHOLD: u64 = 4 << 20;

/// Default cap on the bytes spooled to disk by all requests of one adapter
/// together: 4 GiB. Past it a request is refused like an overload (503
/// `overloaded`, `Retry-After`): the disk, like memory, is shared.
pub const DEFAULT_MAX_SPOOLED_BYTES: u64 = 4 << 30;

/// Spooled chunks shorter than this are copied into a coalescing buffer:
/// 4 KiB.
pub const SPOOL_COALESCE_BELOW: usize = 4 << 10;

/// Capacity of one coalescing buffer of spooled chunks: 64 KiB.
pub const SPOOL_COALESCE_BYTES: usize = 64 << 10;

/// Largest chunk read back from the file at once: 256 KiB.
pub const SPOOL_READ_BYTES: usize = 256 << 10;

/// What a chunk waiting for its write costs in memory beyond its bytes
/// (its handle in the job's list), for the adapter's accounting.
pub const SPOOL_CHUNK_OVERHEAD: u64 = size_of::<Bytes>() as u64;

/// Why the spool failed. The adapter refuses the request (before the
/// decision) or ends the forwarded body (after it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool file could not be created.
    #[error("cannot create a spool file in {dir}")]
    Create {
        /// The configured directory.
        dir: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing spooled bytes failed (a full disk, say).
    #[error("cannot write to the spool file")]
    Write(#[source] std::io::Error),
    /// Reading spooled bytes back failed.
    #[error("cannot read the spool file back")]
    Read(#[source] std::io::Error),
}

impl SpoolError {
    /// Why it failed: the chain of causes under this error (the operating
    /// system's error first), `: `-separated, for the log line next to the
    /// error's own message (which says what failed). Empty when there is
    /// no cause.
    ///
    /// ```
    /// use bbr_core::spool::SpoolError;
    /// let error = SpoolError::Write(std::io::Error::other("No space left on device"));
    /// assert_eq!(error.to_string(), "cannot write to the spool file");
    /// assert_eq!(error.cause().to_string(), "No space left on device");
    /// ```
    pub fn cause(&self) -> impl std::fmt::Display + '_ {
        crate::ErrorChain::causes_of(self)
    }
}

/// Where and when a [`Spool`] writes to disk.
///
/// ```
/// use bbr_core::spool::{DEFAULT_SPOOL_THRESHOLD, SpoolConfig};
/// let config = SpoolConfig::new();
/// assert_eq!(config.memory_threshold(), DEFAULT_SPOOL_THRESHOLD);
/// assert_eq!(config.dir(), std::env::temp_dir());
/// let config = config.with_dir("/var/spool/bbr").with_memory_threshold(1 << 20);
/// assert_eq!((config.dir().to_str(), config.memory_threshold()), (Some("/var/spool/bbr"), 1 << 20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    memory_threshold: u64,
    dir: Option<Arc<Path>>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SpoolConfig {
    /// The defaults: [`DEFAULT_SPOOL_THRESHOLD`], the OS temp directory.
    pub fn new() -> Self {
        Self {
            memory_threshold: DEFAULT_SPOOL_THRESHOLD,
            dir: None,
        }
    }

    /// Bytes of one request kept in memory; what comes after goes to disk.
    /// A chunk that would take the request past it is the first spooled.
    #[must_use]
    pub fn with_memory_threshold(mut self, bytes: u64) -> Self {
        self.memory_threshold = bytes;
        self
    }

    /// The directory of the spool files.
    #[must_use]
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(Arc::from(dir.into()));
        self
    }

    /// Bytes of one request kept in memory.
    pub fn memory_threshold(&self) -> u64 {
        self.memory_threshold
    }

    /// The directory of the spool files ([`std::env::temp_dir`] unless set).
    pub fn dir(&self) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::temp_dir(),
        }
    }

    /// Checks that a spool file can be created in [`dir`](Self::dir), so an
    /// adapter finds an unusable directory at start and not at its first
    /// large request (blocking I/O). The probe file is unlinked at creation
    /// (see [the module docs](self)) and closed before this returns.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Create`] when no file can be created there.
    ///
    /// ```
    /// use bbr_core::spool::{SpoolConfig, SpoolError};
    /// SpoolConfig::new().check_dir()?;
    /// let missing = SpoolConfig::new().with_dir(std::env::temp_dir().join("no-such-dir/nested"));
    /// assert!(matches!(missing.check_dir(), Err(SpoolError::Create { .. })));
    /// # Ok::<(), SpoolError>(())
    /// ```
    pub fn check_dir(&self) -> Result<(), SpoolError> {
        SpoolFile::create_in(&self.dir()).map(drop)
    }
}

/// Where [`Spool::hold`] put a chunk.
#[derive(Debug)]
pub enum Hold {
    /// Under the threshold: the caller holds the chunk (the same `Bytes`).
    Memory(Bytes),
    /// Taken by the spool, bound for disk.
    Spooled,
}

/// The holding phase of one request: memory up to the threshold, then disk.
/// See the [module docs](self).
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    in_memory: u64,
    spooling: bool,
    /// The file, when it exists and no write holds it.
    file: Option<SpoolFile>,
    /// True while a [`SpoolWrite`] is out.
    writing: bool,
    /// Bytes and chunks of the write that is out.
    writing_bytes: u64,
    writing_chunks: u64,
    /// Chunks bound for disk, not yet in a write; `small` coalesces tiny ones.
    pending: Vec<Bytes>,
    pending_bytes: u64,
    small: BytesMut,
    /// Bytes handed to the spool so far (written or not).
    taken: u64,
    spooled: u64,
}

impl Spool {
    /// A spool for one request.
    pub fn new(config: SpoolConfig) -> Self {
        Self {
            config,
            in_memory: 0,
            spooling: false,
            file: None,
            writing: false,
            writing_bytes: 0,
            writing_chunks: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            small: BytesMut::new(),
            taken: 0,
            spooled: 0,
        }
    }

    /// True when a chunk of `len` bytes would be spooled (the spool already
    /// started, or it would take the request past the threshold), so the
    /// caller can reserve disk before [`hold`](Self::hold).
    pub fn would_spool(&self, len: usize) -> bool {
        self.spooling || self.in_memory.saturating_add(len as u64) > self.config.memory_threshold
    }

    /// Keeps `data` in memory (given back) or takes it for disk. Once one
    /// chunk is spooled, every later one is, so the order on disk is the
    /// order received.
    pub fn hold(&mut self, data: Bytes) -> Hold {
        if !self.would_spool(data.len()) {
            self.in_memory += data.len() as u64;
            return Hold::Memory(data);
        }
        self.spooling = true;
        self.taken += data.len() as u64;
        self.pending_bytes += data.len() as u64;
        if data.len() >= SPOOL_COALESCE_BELOW {
            self.seal_small();
            self.pending.push(data);
            return Hold::Spooled;
        }
        if self.small.capacity() - self.small.len() < data.len() {
            self.seal_small();
            self.small = BytesMut::with_capacity(SPOOL_COALESCE_BYTES);
        }
        self.small.extend_from_slice(&data);
        Hold::Spooled
    }

    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            self.pending.push(std::mem::take(&mut self.small).freeze());
        }
    }

    /// True once a chunk went to the spool.
    pub fn is_spooling(&self) -> bool {
        self.spooling
    }

    /// Bytes handed to the spool (written, being written, or pending).
    pub fn taken_bytes(&self) -> u64 {
        self.taken
    }

    /// Bytes written to the file.
    pub fn spooled_bytes(&self) -> u64 {
        self.spooled
    }

    /// Memory held by chunks bound for disk (pending or being written): their
    /// bytes, a coalescing buffer's whole capacity, and
    /// [`SPOOL_CHUNK_OVERHEAD`] per chunk.
    pub fn memory_cost(&self) -> u64 {
        let small = if self.small.is_empty() {
            0
        } else {
            self.small.capacity() as u64 - self.small.len() as u64 + SPOOL_CHUNK_OVERHEAD
        };
        self.pending_bytes
            + self.writing_bytes
            + (self.pending.len() as u64 + self.writing_chunks) * SPOOL_CHUNK_OVERHEAD
            + small
    }

    /// True while a write is out.
    pub fn is_writing(&self) -> bool {
        self.writing
    }

    /// True when the caller should wait for the write that is out before
    /// taking more chunks: at least a coalescing buffer's worth is pending
    /// behind it. This bounds the memory of a request that spools to about
    /// its threshold plus two writes.
    pub fn must_wait(&self) -> bool {
        self.writing && self.pending_bytes >= SPOOL_COALESCE_BYTES as u64
    }

    /// The next write to run, when none is out and chunks are pending. It
    /// takes every pending chunk (so writes grow while the disk is slow).
    pub fn next_write(&mut self) -> Option<SpoolWrite> {
        if self.writing {
            return None;
        }
        self.seal_small();
        if self.pending.is_empty() {
            return None;
        }
        self.writing = true;
        self.writing_bytes = std::mem::take(&mut self.pending_bytes);
        self.writing_chunks = self.pending.len() as u64;
        Some(SpoolWrite {
            file: self.file.take(),
            dir: self.config.dir(),
            chunks: std::mem::take(&mut self.pending),
        })
    }

    /// Takes back a write that ran.
    ///
    /// # Errors
    ///
    /// The write's own error, once; the spool is then unusable (the file is
    /// dropped).
    pub fn write_done(&mut self, done: SpoolWritten) -> Result<(), SpoolError> {
        self.writing = false;
        self.writing_bytes = 0;
        self.writing_chunks = 0;
        let SpoolWritten { file, result } = done;
        let written = result?;
        self.spooled += written;
        self.file = file;
        Ok(())
    }

    /// The file (`None` when nothing was written) and the chunks bound for
    /// disk that were not written yet, in order: they follow the file.
    ///
    /// # Panics
    ///
    /// If a write is still out: wait for it first.
    pub fn into_parts(mut self) -> (Option<SpoolFile>, Vec<Bytes>) {
        assert!(!self.writing, "a spool write is still out");
        self.seal_small();
        (self.file, self.pending)
    }
}

/// A memory budget an adapter reserves from, per request (a reservation
/// against a cap shared by every request, say), so that a [`ReservedCost`]
/// can keep its part exact whatever the budget's type.
///
/// ```
/// use bbr_core::spool::MemoryBudget;
/// struct Cap { free: u64 }
/// impl MemoryBudget for Cap {
///     fn try_reserve(&mut self, bytes: u64) -> bool {
///         let Some(free) = self.free.checked_sub(bytes) else { return false };
///         self.free = free;
///         true
///     }
///     fn release(&mut self, bytes: u64) {
///         self.free += bytes;
///     }
/// }
/// let mut cap = Cap { free: 8 };
/// assert!(cap.try_reserve(8) && !cap.try_reserve(1));
/// ```
pub trait MemoryBudget {
    /// Reserves `bytes` more; false, with nothing reserved, past the cap.
    fn try_reserve(&mut self, bytes: u64) -> bool;
    /// Gives `bytes` back.
    fn release(&mut self, bytes: u64);
}

/// What one request reserved from a [`MemoryBudget`] for a memory cost that
/// changes as it holds bytes: [`Spool::memory_cost`] (the chunks bound for
/// disk), alone or with what the adapter holds in memory itself. Each
/// change moves the reservation by the difference only.
///
/// ```
/// use bbr_core::spool::{MemoryBudget, ReservedCost, Spool, SpoolConfig};
/// # struct Cap { free: u64 }
/// # impl MemoryBudget for Cap {
/// #     fn try_reserve(&mut self, bytes: u64) -> bool {
/// #         let Some(free) = self.free.checked_sub(bytes) else { return false };
/// #         self.free = free;
/// #         true
/// #     }
/// #     fn release(&mut self, bytes: u64) { self.free += bytes; }
/// # }
/// let mut cap = Cap { free: 1 << 20 };
/// let mut reserved = ReservedCost::new();
/// let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(0));
/// spool.hold(bytes::Bytes::from(vec![0u8; 8192])); // bound for disk
/// assert!(reserved.reserve_exactly(&mut cap, spool.memory_cost()));
/// assert_eq!(reserved.bytes(), spool.memory_cost());
/// let written = spool.next_write().expect("a write").run();
/// spool.write_done(written)?;
/// assert!(reserved.reserve_exactly(&mut cap, spool.memory_cost())); // written: 0
/// assert_eq!((reserved.bytes(), cap.free), (0, 1 << 20));
/// # Ok::<(), bbr_core::spool::SpoolError>(())
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReservedCost {
    bytes: u64,
}

impl ReservedCost {
    /// Nothing reserved yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes reserved now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Moves the reservation in `budget` to `want` bytes: reserves the
    /// difference when it grows, releases it when it shrinks. False when
    /// the budget refuses the growth; the reservation is then unchanged.
    pub fn reserve_exactly(&mut self, budget: &mut impl MemoryBudget, want: u64) -> bool {
        if want > self.bytes {
            if !budget.try_reserve(want - self.bytes) {
                return false;
            }
        } else {
            budget.release(self.bytes - want);
        }
        self.bytes = want;
        true
    }
}

/// A batch of spooled chunks to write: run it where blocking is allowed and
/// give the result to [`Spool::write_done`]. The first write creates the
/// file.
#[derive(Debug)]
pub struct SpoolWrite {
    file: Option<SpoolFile>,
    dir: PathBuf,
    chunks: Vec<Bytes>,
}

impl SpoolWrite {
    /// Bytes to write.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|chunk| chunk.len() as u64).sum()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Bytes::is_empty)
    }

    /// Gives the write up without running it, as if it had failed with
    /// `source`: for an adapter that cannot run it (its blocking pool is
    /// gone) and for fault-injection tests. The chunks are dropped and the
    /// spool becomes unusable, as after any failed write.
    ///
    /// ```
    /// use bbr_core::spool::{Spool, SpoolConfig, SpoolError};
    /// let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(0));
    /// spool.hold(bytes::Bytes::from_static(b"x"));
    /// let job = spool.next_write().expect("a write");
    /// let done = job.fail(std::io::Error::other("disk full"));
    /// assert!(matches!(spool.write_done(done), Err(SpoolError::Write(_))));
    /// ```
    pub fn fail(self, source: std::io::Error) -> SpoolWritten {
        SpoolWritten {
            file: None,
            result: Err(SpoolError::Write(source)),
        }
    }

    /// Creates the file if needed and appends the chunks (blocking I/O).
    pub fn run(self) -> SpoolWritten {
        let Self { file, dir, chunks } = self;
        let mut file = match file {
            Some(file) => file,
            None => match SpoolFile::create_in(&dir) {
                Ok(file) => file,
                Err(error) => {
                    return SpoolWritten {
                        file: None,
                        result: Err(error),
                    };
                }
            },
        };
        let mut written = 0;
        for chunk in &chunks {
            if let Err(error) = file.append(chunk) {
                return SpoolWritten {
                    file: None,
                    result: Err(error),
                };
            }
            written += chunk.len() as u64;
        }
        SpoolWritten {
            file: Some(file),
            result: Ok(written),
        }
    }
}

/// The result of a [`SpoolWrite`].
#[derive(Debug)]
pub struct SpoolWritten {
    file: Option<SpoolFile>,
    result: Result<u64, SpoolError>,
}

/// One read of a spool file back, after the decision: the next bytes in
/// the order written, at most [`SPOOL_READ_BYTES`] (or the size given).
/// Like a [`SpoolWrite`], run it where blocking is allowed; it gives the
/// file back with what it read, for the next read.
///
/// ```
/// use bbr_core::spool::{SpoolFile, SpoolRead};
/// let mut file = SpoolFile::create_in(&std::env::temp_dir())?;
/// file.append(b"spooled")?;
/// let (file, read) = SpoolRead::with_max_bytes(file, 4).run(); // blocking
/// assert_eq!(&read?.unwrap()[..], b"spoo");
/// let (file, read) = SpoolRead::new(file).run();
/// assert_eq!(&read?.unwrap()[..], b"led");
/// let (_, read) = SpoolRead::new(file).run();
/// assert_eq!(read?, None); // everything was read
/// # Ok::<(), bbr_core::spool::SpoolError>(())
/// ```
#[derive(Debug)]
pub struct SpoolRead {
    file: SpoolFile,
    max: usize,
}

impl SpoolRead {
    /// The next read of `file`, of at most [`SPOOL_READ_BYTES`].
    pub fn new(file: SpoolFile) -> Self {
        Self::with_max_bytes(file, SPOOL_READ_BYTES)
    }

    /// The next read of `file`, of at most `max` bytes (at least 1: a read
    /// of nothing would never reach the end of the file).
    pub fn with_max_bytes(file: SpoolFile, max: usize) -> Self {
        Self {
            file,
            max: max.max(1),
        }
    }

    /// Reads (blocking I/O): the file back, and the bytes read, at least
    /// one and at most the read's size; `None` once everything was read.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Read`], also when the file is shorter than written.
    pub fn run(self) -> (SpoolFile, Result<Option<Bytes>, SpoolError>) {
        let Self { mut file, max } = self;
        let read = file.read_chunk(max);
        (file, read)
    }
}

/// One request's spool file: appended to, then read back in order. See the
/// [module docs](self) for where it lives and how it is removed.
#[derive(Debug)]
pub struct SpoolFile {
    file: File,
    /// Set where the file could not be unlinked at creation: removed on drop.
    remove_on_drop: Option<PathBuf>,
    written: u64,
    read: u64,
    /// The file's offset, to seek only when switching from writing to
    /// reading.
    cursor: u64,
}

/// Tells spool file names of one process apart.
static SPOOL_FILES: AtomicU64 = AtomicU64::new(0);

impl SpoolFile {
    /// Creates an empty anonymous file in `dir` (blocking I/O).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Create`] when no file can be created there.
    ///
    /// ```
    /// let mut file = bbr_core::spool::SpoolFile::create_in(&std::env::temp_dir())?;
    /// file.append(b"spooled")?;
    /// assert_eq!((file.len(), file.remaining()), (7, 7));
    /// assert_eq!(&file.read_chunk(4)?.unwrap()[..], b"spoo");
    /// assert_eq!(&file.read_chunk(4)?.unwrap()[..], b"led");
    /// assert_eq!(file.read_chunk(4)?, None);
    /// # Ok::<(), bbr_core::spool::SpoolError>(())
    /// ```
    pub fn create_in(dir: &Path) -> Result<Self, SpoolError> {
        let create = |source| SpoolError::Create {
            dir: dir.to_path_buf(),
            source,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let mut attempt = 0;
        let (file, path) = loop {
            let n = SPOOL_FILES.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".bbr-spool-{}-{n}-{nanos}", std::process::id()));
            let mut options = OpenOptions::new();
            options.read(true).write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(file) => break (file, path),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(error) => return Err(create(error)),
            }
        };
        // Unlinked at once where an open file can be (Unix): the bytes live
        // as long as the handle, and nothing outlives the process.
        let remove_on_drop = match std::fs::remove_file(&path) {
            Ok(()) => None,
            Err(_) => Some(path),
        };
        Ok(Self {
            file,
            remove_on_drop,
            written: 0,
            read: 0,
            cursor: 0,
        })
    }

    /// Appends `data` (blocking I/O).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Write`].
    pub fn append(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if self.cursor != self.written {
            self.file
                .seek(SeekFrom::Start(self.written))
                .map_err(SpoolError::Write)?;
        }
        self.file.write_all(data).map_err(SpoolError::Write)?;
        self.written += data.len() as u64;
        self.cursor = self.written;
        Ok(())
    }

    /// Bytes written.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Bytes written and not read back yet.
    pub fn remaining(&self) -> u64 {
        self.written - self.read
    }

    /// The next bytes in the order written, at most `max` (and at least one
    /// unless `max` is 0); `None` once everything was read (blocking I/O).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Read`], also when the file is shorter than written.
    pub fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, SpoolError> {
        let remaining = self.remaining();
        if remaining == 0 {
            return Ok(None);
        }
        let len = usize::try_from(remaining).unwrap_or(usize::MAX).min(max);
        if self.cursor != self.read {
            self.file
                .seek(SeekFrom::Start(self.read))
                .map_err(SpoolError::Read)?;
        }
        let mut buffer = BytesMut::zeroed(len);
        self.file
            .read_exact(&mut buffer)
            .map_err(SpoolError::Read)?;
        self.read += len as u64;
        self.cursor = self.read;
        Ok(Some(buffer.freeze()))
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Some(path) = self.remove_on_drop.take() {
            // Best effort: the handle is closed right after.
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_all(spool: &mut Spool) {
        while let Some(job) = spool.next_write() {
            spool.write_done(job.run()).unwrap();
        }
    }

    fn read_all(file: &mut SpoolFile, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = file.read_chunk(max).unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= max);
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[test]
    fn the_threshold_is_inclusive_and_the_chunk_past_it_is_the_first_spooled() {
        let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(8));
        let first = Bytes::from_static(b"12345678");
        match spool.hold(first.clone()) {
            // The same bytes, not a copy.
            Hold::Memory(held) => assert_eq!(held.as_ptr(), first.as_ptr()),
            Hold::Spooled => panic!("at the threshold stays in memory"),
        }
        assert!(spool.would_spool(1));
        assert!(matches!(
            spool.hold(Bytes::from_static(b"9")),
            Hold::Spooled
        ));
        // Once spooling, even an empty chunk goes on (order on disk).
        assert!(spool.would_spool(0));
        assert_eq!(spool.taken_bytes(), 1);
    }

    #[test]
    fn every_chunking_reads_back_in_order_byte_identical() {
        let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1, 7, 64, 4095, 4096, 5000, 20_000] {
            for read in [1, 100, SPOOL_READ_BYTES] {
                let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(1000));
                let mut memory = Vec::new();
                for (i, piece) in body.chunks(chunk).enumerate() {
                    if let Hold::Memory(bytes) = spool.hold(Bytes::copy_from_slice(piece)) {
                        memory.extend_from_slice(&bytes);
                    }
                    // Writes interleaved with holding, as an adapter runs them.
                    if i % 3 == 0
                        && let Some(job) = spool.next_write()
                    {
                        spool.write_done(job.run()).unwrap();
                    }
                }
                // Leave the last pending chunks unwritten: they follow the file.
                let (file, rest) = spool.into_parts();
                let mut all = memory;
                if let Some(mut file) = file {
                    all.extend(read_all(&mut file, read));
                }
                for piece in rest {
                    all.extend_from_slice(&piece);
                }
                assert_eq!(all, body, "chunks of {chunk}, reads of {read}");
            }
        }
    }

    #[test]
    fn large_chunks_wait_as_they_came_and_small_ones_are_coalesced() {
        let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(0));
        let large = Bytes::from(vec![1u8; SPOOL_COALESCE_BELOW]);
        spool.hold(large.clone());
        for _ in 0..100 {
            spool.hold(Bytes::from_static(b"x"));
        }
        let cost = spool.memory_cost();
        // The large chunk, one buffer's capacity, two handles.
        assert_eq!(
            cost,
            SPOOL_COALESCE_BELOW as u64 + SPOOL_COALESCE_BYTES as u64 + 2 * SPOOL_CHUNK_OVERHEAD
        );
        let job = spool.next_write().unwrap();
        assert_eq!(job.chunks.len(), 2);
        assert_eq!(job.chunks[0].as_ptr(), large.as_ptr());
        assert_eq!(job.len(), SPOOL_COALESCE_BELOW as u64 + 100);
        spool.write_done(job.run()).unwrap();
        assert_eq!(spool.memory_cost(), 0);
    }

    #[test]
    fn one_write_at_a_time_and_wait_when_a_buffer_is_pending_behind_it() {
        let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(0));
        spool.hold(Bytes::from(vec![0u8; 10]));
        let job = spool.next_write().unwrap();
        assert!(spool.is_writing() && spool.next_write().is_none());
        spool.hold(Bytes::from(vec![0u8; SPOOL_COALESCE_BYTES - 1]));
        assert!(!spool.must_wait());
        spool.hold(Bytes::from(vec![0u8; 1]));
        assert!(spool.must_wait());
        spool.write_done(job.run()).unwrap();
        assert!(!spool.must_wait());
        run_all(&mut spool);
        assert_eq!(spool.spooled_bytes(), 10 + SPOOL_COALESCE_BYTES as u64);
    }

    #[test]
    fn a_directory_that_cannot_hold_files_is_a_create_error() {
        let missing = std::env::temp_dir().join("bbr-spool-no-such-dir/nested");
        let mut spool = Spool::new(
            SpoolConfig::new()
                .with_memory_threshold(0)
                .with_dir(&missing),
        );
        spool.hold(Bytes::from_static(b"x"));
        let done = spool.next_write().unwrap().run();
        let error = spool.write_done(done);
        assert!(matches!(error, Err(SpoolError::Create { dir, .. }) if dir == missing));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any body, any chunking, any threshold, writes run at any points:
        /// memory, then the file, then what was not written, is the body.
        #[test]
        fn memory_then_file_then_rest_is_the_body(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40_000),
            cuts in proptest::collection::vec(1usize..9000, 1..64),
            writes in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..64),
            threshold in 0u64..50_000,
            read in 1usize..70_000,
        ) {
            let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(threshold));
            let mut memory = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let take = cuts[i % cuts.len()].min(rest.len());
                if let Hold::Memory(bytes) = spool.hold(Bytes::copy_from_slice(&rest[..take])) {
                    proptest::prop_assert!(spool.taken_bytes() == 0);
                    memory.extend_from_slice(&bytes);
                }
                rest = &rest[take..];
                if writes[i % writes.len()]
                    && let Some(job) = spool.next_write()
                {
                    spool.write_done(job.run()).unwrap();
                }
                i += 1;
            }
            proptest::prop_assert!(memory.len() as u64 <= threshold);
            proptest::prop_assert_eq!(spool.taken_bytes(), (body.len() - memory.len()) as u64);
            let (file, pending) = spool.into_parts();
            let mut all = memory;
            if let Some(mut file) = file {
                all.extend(read_all(&mut file, read));
            }
            for piece in pending {
                all.extend_from_slice(&piece);
            }
            proptest::prop_assert_eq!(all, body);
        }
    }

    /// A cap of `free` bytes that records what it was asked.
    #[derive(Debug, Default)]
    struct Cap {
        free: u64,
        calls: Vec<(bool, u64)>,
    }

    impl MemoryBudget for Cap {
        fn try_reserve(&mut self, bytes: u64) -> bool {
            self.calls.push((true, bytes));
            let Some(free) = self.free.checked_sub(bytes) else {
                return false;
            };
            self.free = free;
            true
        }

        fn release(&mut self, bytes: u64) {
            self.calls.push((false, bytes));
            self.free += bytes;
        }
    }

    #[test]
    fn a_reserved_cost_moves_by_the_difference_and_a_refusal_changes_nothing() {
        let mut cap = Cap {
            free: 100,
            ..Cap::default()
        };
        let mut reserved = ReservedCost::new();
        assert!(reserved.reserve_exactly(&mut cap, 60));
        assert!(reserved.reserve_exactly(&mut cap, 100));
        assert!(reserved.reserve_exactly(&mut cap, 30));
        assert_eq!(cap.calls, [(true, 60), (true, 40), (false, 70)]);
        // At the cap, then one past it: refused, nothing moves.
        assert!(reserved.reserve_exactly(&mut cap, 100));
        assert!(!reserved.reserve_exactly(&mut cap, 101));
        assert_eq!((reserved.bytes(), cap.free), (100, 0));
        assert!(reserved.reserve_exactly(&mut cap, 0));
        assert_eq!((reserved.bytes(), cap.free), (0, 100));
    }

    #[test]
    fn a_reserved_cost_follows_the_spool_to_nothing_once_written() {
        let mut cap = Cap {
            free: u64::MAX,
            ..Cap::default()
        };
        let mut reserved = ReservedCost::new();
        let mut spool = Spool::new(SpoolConfig::new().with_memory_threshold(0));
        for _ in 0..10 {
            spool.hold(Bytes::from_static(b"tiny"));
            assert!(reserved.reserve_exactly(&mut cap, spool.memory_cost()));
            assert_eq!(u64::MAX - cap.free, spool.memory_cost());
        }
        run_all(&mut spool);
        assert!(reserved.reserve_exactly(&mut cap, spool.memory_cost()));
        assert_eq!((reserved.bytes(), cap.free), (0, u64::MAX));
    }

    fn file_with(body: &[u8]) -> SpoolFile {
        let mut file = SpoolFile::create_in(&std::env::temp_dir()).unwrap();
        file.append(body).unwrap();
        file
    }

    /// Every read of `max` bytes, until the end.
    fn read_back(mut file: SpoolFile, max: usize) -> Vec<Bytes> {
        let mut reads = Vec::new();
        loop {
            let (back, read) = SpoolRead::with_max_bytes(file, max).run();
            match read.unwrap() {
                Some(bytes) => reads.push(bytes),
                None => return reads,
            }
            file = back;
        }
    }

    #[test]
    fn a_spool_read_yields_reads_of_at_most_its_size_in_order() {
        let body = b"0123456789ab";
        let lengths = |reads: &[Bytes]| reads.iter().map(Bytes::len).collect::<Vec<_>>();
        // One byte a read.
        let reads = read_back(file_with(body), 1);
        assert_eq!(reads.len(), 12);
        assert_eq!(reads.concat(), body);
        // An exact multiple of the read size: no empty read at the end.
        let reads = read_back(file_with(body), 4);
        assert_eq!(lengths(&reads), [4, 4, 4]);
        assert_eq!(reads.concat(), body);
        // Not a multiple: the last read is short.
        assert_eq!(lengths(&read_back(file_with(body), 5)), [5, 5, 2]);
        // The whole file at once, and one past it.
        assert_eq!(lengths(&read_back(file_with(body), 12)), [12]);
        assert_eq!(lengths(&read_back(file_with(body), 13)), [12]);
        // A size of 0 reads 1, so the end is reached.
        assert_eq!(read_back(file_with(body), 0).len(), 12);
        // The default size.
        let large = vec![7u8; SPOOL_READ_BYTES + 1];
        let reads = read_back(file_with(&large), SPOOL_READ_BYTES);
        assert_eq!(lengths(&reads), [SPOOL_READ_BYTES, 1]);
        let (_, read) = SpoolRead::new(file_with(&large)).run();
        assert_eq!(read.unwrap().unwrap().len(), SPOOL_READ_BYTES);
        // Nothing written: the end at once.
        assert!(read_back(file_with(b""), 4).is_empty());
    }

    #[test]
    fn a_spool_read_of_a_file_shorter_than_written_is_a_read_error() {
        let file = file_with(b"0123456789");
        let (file, read) = SpoolRead::with_max_bytes(file, 4).run();
        assert_eq!(&read.unwrap().unwrap()[..], b"0123");
        // Cut behind the spool's back (as a full tmpfs could).
        file.file.set_len(6).unwrap();
        let (file, read) = SpoolRead::with_max_bytes(file, 4).run();
        let error = read.unwrap_err();
        assert!(
            matches!(&error, SpoolError::Read(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
        );
        assert_eq!(error.to_string(), "cannot read the spool file back");
        assert!(!error.cause().to_string().is_empty());
        assert_eq!(file.remaining(), 6);
    }

    #[test]
    fn check_dir_creates_and_drops_a_probe_in_a_usable_dir() {
        let dir = std::env::temp_dir().join(format!("bbr-spool-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        SpoolConfig::new().with_dir(&dir).check_dir().unwrap();
        // Nothing left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn check_dir_of_a_missing_dir_or_a_file_is_a_create_error_with_its_cause() {
        let missing = std::env::temp_dir().join("bbr-spool-check-no-such-dir/nested");
        let error = SpoolConfig::new()
            .with_dir(&missing)
            .check_dir()
            .unwrap_err();
        let SpoolError::Create { dir, source } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(dir, &missing);
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(error.cause().to_string(), source.to_string());
        // A regular file where the directory should be (even root cannot
        // create a file under it).
        let file =
            std::env::temp_dir().join(format!("bbr-spool-check-file-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let error = SpoolConfig::new().with_dir(&file).check_dir();
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(error, Err(SpoolError::Create { dir, .. }) if dir == file));
    }

    #[test]
    fn the_cause_is_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        let error = SpoolError::Write(std::io::Error::other(Outer(Inner)));
        assert_eq!(error.cause().to_string(), "outer: inner");
        let error = SpoolError::Write(std::io::Error::from_raw_os_error(28));
        assert_eq!(
            error.cause().to_string(),
            std::io::Error::from_raw_os_error(28).to_string()
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_unlinked_at_creation() {
        let dir = std::env::temp_dir().join(format!("bbr-spool-unlink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = SpoolFile::create_in(&dir).unwrap();
        file.append(b"kept while open").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(read_all(&mut file, 4), b"kept while open");
        std::fs::remove_dir(&dir).unwrap();
    }
}

//! Files as retained MQTT messages: each file is cut into chunks that fit a
//! payload limit (AWS IoT Core's 128 KB by default), each chunk a message
//! of its own whose payload starts with its index and the count, 4 bytes
//! each, big-endian. Integrity is TUF's business, not the chunks': a file
//! is whole when every chunk of the count has come, and is then verified.

use std::collections::HashMap;

use bytes::Bytes;

/// The payload limit by default, bytes (AWS IoT Core's).
pub const PAYLOAD_LIMIT: usize = 128 * 1024;

/// Bytes of a chunk's header.
pub const HEADER: usize = 8;

/// Why a chunk was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Shorter than its header, or an index past its count.
    #[error("malformed chunk")]
    Malformed,
    /// A file (or one chunk of it) over the largest this assembler takes.
    #[error("over the {0} bytes a file may have here")]
    TooLarge(usize),
    /// A limit too small to carry data.
    #[error("a payload limit of {0} bytes leaves no room for data (at least {HEADER} more)")]
    LimitTooSmall(usize),
}

/// The chunks of `file`, each at most `limit` bytes.
pub fn split(file: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, ChunkError> {
    let room = limit
        .checked_sub(HEADER)
        .filter(|r| *r > 0)
        .ok_or(ChunkError::LimitTooSmall(limit))?;
    let parts: Vec<&[u8]> = if file.is_empty() {
        vec![&[]]
    } else {
        file.chunks(room).collect()
    };
    let count = parts.len() as u32;
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let mut chunk = Vec::with_capacity(HEADER + part.len());
            chunk.extend_from_slice(&(i as u32).to_be_bytes());
            chunk.extend_from_slice(&count.to_be_bytes());
            chunk.extend_from_slice(part);
            chunk
        })
        .collect())
}

/// Largest file an assembler takes, bytes: a component larger than the
/// largest guest memory is no logic this host would run.
pub const MAX_FILE: usize = 64 << 20;

/// Files in progress at once, at most; a new one beyond evicts the oldest.
const MAX_PARTIAL: usize = 16;

/// A file in progress is dropped when no chunk of it came for this long.
pub const PARTIAL_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// Chunks of one file, at most (so the smallest payload limit that carries
/// a [`MAX_FILE`] file is 8 KiB and its header).
pub const MAX_CHUNKS: usize = 8192;

/// The smallest payload limit, bytes.
pub const MIN_PAYLOAD_LIMIT: usize = MAX_FILE / MAX_CHUNKS + HEADER;

/// Collects chunks of several files, by name; a file is complete when all
/// its chunks have come (a chunk of a different count starts it anew).
/// Bounded whatever a publisher sends: files of at most `max_file` bytes,
/// at most `max_total` bytes and 16 files in progress (the oldest go
/// first), each dropped [`PARTIAL_TTL`] after its last chunk.
#[derive(Debug)]
pub struct Assembler {
    partial: HashMap<String, Partial>,
    /// Names in progress, oldest first.
    order: Vec<String>,
    max_file: usize,
    max_total: usize,
    /// Bytes of every file in progress.
    total: usize,
    /// How long a file in progress waits for its next chunk.
    ttl: std::time::Duration,
}

impl Default for Assembler {
    fn default() -> Self {
        Self::new(MAX_FILE, MAX_FILE)
    }
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Bytes>>,
    bytes: usize,
    last: std::time::Instant,
}

impl Assembler {
    /// An assembler of files up to `max_file` bytes, `max_total` bytes in
    /// progress at most.
    pub fn new(max_file: usize, max_total: usize) -> Self {
        Self {
            partial: HashMap::new(),
            order: Vec::new(),
            max_file,
            max_total: max_total.max(max_file),
            total: 0,
            ttl: PARTIAL_TTL,
        }
    }

    /// This assembler, waiting `ttl` for a file's next chunk.
    pub fn with_ttl(self, ttl: std::time::Duration) -> Self {
        Self { ttl, ..self }
    }

    /// Bytes of the files in progress.
    pub fn bytes(&self) -> usize {
        self.total
    }

    fn remove(&mut self, name: &str) -> Option<Partial> {
        let file = self.partial.remove(name)?;
        self.order.retain(|n| n != name);
        self.total -= file.bytes;
        Some(file)
    }

    /// Drops the files whose last chunk came its time to live (by default
    /// [`PARTIAL_TTL`]) before `now`; returns the bytes freed.
    pub fn expire(&mut self, now: std::time::Instant) -> usize {
        let stale: Vec<String> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) >= self.ttl)
            .map(|(n, _)| n.clone())
            .collect();
        stale
            .iter()
            .filter_map(|n| self.remove(n))
            .map(|p| p.bytes)
            .sum()
    }

    /// Takes one chunk of `name`; returns the file when it is complete.
    pub fn take(&mut self, name: &str, chunk: &[u8]) -> Result<Option<Bytes>, ChunkError> {
        if chunk.len() < HEADER {
            return Err(ChunkError::Malformed);
        }
        let index = u32::from_be_bytes(chunk[0..4].try_into().expect("4 bytes")) as usize;
        let count = u32::from_be_bytes(chunk[4..8].try_into().expect("4 bytes")) as usize;
        if count == 0 || index >= count || count > MAX_CHUNKS {
            return Err(ChunkError::Malformed);
        }
        let data = &chunk[HEADER..];
        if data.len() > self.max_file {
            return Err(ChunkError::TooLarge(self.max_file));
        }
        if !self.partial.contains_key(name) {
            if self.order.len() >= MAX_PARTIAL {
                let oldest = self.order[0].clone();
                self.remove(&oldest);
            }
            self.order.push(name.to_string());
            self.partial.insert(
                name.to_string(),
                Partial {
                    parts: Vec::new(),
                    bytes: 0,
                    last: std::time::Instant::now(),
                },
            );
        }
        let file = self.partial.get_mut(name).expect("present");
        file.last = std::time::Instant::now();
        if file.parts.len() != count {
            self.total -= file.bytes;
            file.parts = vec![None; count];
            file.bytes = 0;
        }
        let replaced = file.parts[index].as_ref().map_or(0, Bytes::len);
        let bytes = file.bytes - replaced + data.len();
        if bytes > self.max_file {
            self.remove(name);
            return Err(ChunkError::TooLarge(self.max_file));
        }
        self.total = self.total - file.bytes + bytes;
        file.bytes = bytes;
        file.parts[index] = Some(Bytes::copy_from_slice(data));
        // Over the total: the oldest other files in progress go.
        while self.total > self.max_total {
            let Some(oldest) = self.order.iter().find(|n| *n != name).cloned() else {
                break;
            };
            self.remove(&oldest);
        }
        let parts = &self.partial[name].parts;
        if parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let done = self.remove(name).expect("present");
        let mut file = Vec::with_capacity(done.bytes);
        for part in done.parts.into_iter().flatten() {
            file.extend_from_slice(&part);
        }
        Ok(Some(Bytes::from(file)))
    }
}

/// Hands memory freed by dropped files back to the system (the allocator
/// keeps freed pages otherwise, and the process would stay as large as
/// its largest flood).
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_through_chunks_in_any_order() {
        let file: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut chunks = split(&file, 100).unwrap();
        assert_eq!(chunks.len(), 4000usize.div_ceil(92));
        assert!(chunks.iter().all(|c| c.len() <= 100));
        chunks.reverse();
        let mut a = Assembler::default();
        let last = chunks.pop().unwrap();
        for c in &chunks {
            assert_eq!(a.take("f", c).unwrap(), None);
        }
        assert_eq!(a.take("f", &last).unwrap().unwrap(), file);
    }

    #[test]
    fn small_and_empty_files_are_one_chunk() {
        assert_eq!(split(b"x", 100).unwrap().len(), 1);
        let empty = split(b"", 100).unwrap();
        assert_eq!(empty.len(), 1);
        assert_eq!(
            Assembler::default()
                .take("e", &empty[0])
                .unwrap()
                .unwrap()
                .len(),
            0
        );
        assert!(split(b"x", 8).is_err());
    }

    #[test]
    fn a_hostile_publisher_cannot_grow_it_without_bound() {
        let mut a = Assembler::default();
        // A count claiming more chunks than a whole file may have.
        let mut huge = vec![0u8; HEADER];
        huge[4..8].copy_from_slice(&(MAX_CHUNKS as u32 + 1).to_be_bytes());
        assert_eq!(a.take("f", &huge), Err(ChunkError::Malformed));
        // Many names: only the latest 16 are kept in progress.
        let two = split(&[1u8; 20], 18).unwrap();
        for i in 0..100 {
            a.take(&format!("f{i}"), &two[0]).unwrap();
        }
        assert_eq!(a.partial.len(), MAX_PARTIAL);
        assert!(a.partial.contains_key("f99") && !a.partial.contains_key("f0"));
    }

    #[test]
    fn files_in_progress_are_bounded_in_bytes_and_expire() {
        let mut a = Assembler::new(100, 250).with_ttl(std::time::Duration::from_secs(60));
        // Three files of two 80-byte chunks, only the first chunk each.
        let chunks = split(&[7u8; 160], 88).unwrap();
        for name in ["a", "b", "c", "d"] {
            assert_eq!(a.take(name, &chunks[0]).unwrap(), None);
        }
        assert!(a.bytes() <= 250, "{}", a.bytes());
        assert!(!a.partial.contains_key("a"), "the oldest went first");
        // Over the largest file: refused.
        let big = split(&[1u8; 200], 208).unwrap();
        assert_eq!(a.take("big", &big[0]), Err(ChunkError::TooLarge(100)));
        let later = std::time::Instant::now() + std::time::Duration::from_secs(61);
        let held = a.bytes();
        assert_eq!(a.expire(later), held);
        assert_eq!((a.bytes(), a.partial.len()), (0, 0));
    }

    #[test]
    fn malformed_chunks_are_refused_and_a_new_count_restarts_the_file() {
        let mut a = Assembler::default();
        assert_eq!(a.take("f", b"short"), Err(ChunkError::Malformed));
        assert_eq!(
            a.take("f", &[0, 0, 0, 5, 0, 0, 0, 2]),
            Err(ChunkError::Malformed)
        );
        let old = split(&[1u8; 30], 18).unwrap(); // 3 chunks
        a.take("f", &old[0]).unwrap();
        let new = split(&[2u8; 10], 18).unwrap(); // 1 chunk
        assert_eq!(a.take("f", &new[0]).unwrap().unwrap(), vec![2u8; 10]);
    }
}

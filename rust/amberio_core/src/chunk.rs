//! Cutting a stream of arbitrary-size chunks into fixed-size parts, and the feed buffer.

/// One piece of input that lies inside a single part.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    pub bytes: &'a [u8],
    /// The piece ends exactly at the end of its part (the part is full).
    pub completes_part: bool,
}

/// Tracks how far the current part is filled and splits input at part boundaries.
#[derive(Debug, Clone)]
pub struct PartCutter {
    part_size: u64,
    filled: u64,
}

impl PartCutter {
    /// `part_size` must be > 0.
    pub fn new(part_size: u64) -> Self {
        assert!(part_size > 0, "part_size must be > 0");
        Self {
            part_size,
            filled: 0,
        }
    }

    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// Bytes already in the current (not yet full) part.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Split `data` into pieces, none of which crosses a part boundary, and advance.
    pub fn cut<'a>(&'a mut self, data: &'a [u8]) -> Pieces<'a> {
        Pieces {
            cutter: self,
            rest: data,
        }
    }

    /// Advance over the next piece of input when `available` bytes are at hand: returns the
    /// piece's length (up to the part boundary) and whether it completes its part.
    pub fn take(&mut self, available: usize) -> (usize, bool) {
        let room = self.part_size - self.filled;
        let n = (available as u64).min(room) as usize;
        self.filled += n as u64;
        let full = self.filled == self.part_size;
        if full {
            self.filled = 0;
        }
        (n, full)
    }
}

/// Iterator returned by [`PartCutter::cut`].
pub struct Pieces<'a> {
    cutter: &'a mut PartCutter,
    rest: &'a [u8],
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let (n, full) = self.cutter.take(self.rest.len());
        let (bytes, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(Piece {
            bytes,
            completes_part: full,
        })
    }
}

/// Largest buffer reserved before it is known to be needed.
const MAX_INITIAL_RESERVE: usize = 16 << 20;

/// Bytes fed by the caller and not yet written. Feeding only copies.
#[derive(Debug)]
pub struct FeedBuffer {
    buf: Vec<u8>,
    flush_bytes: usize,
}

impl FeedBuffer {
    /// `flush_bytes` must be > 0. Nothing is allocated before the first feed.
    pub fn new(flush_bytes: usize) -> Self {
        assert!(flush_bytes > 0, "flush_bytes must be > 0");
        Self {
            buf: Vec::new(),
            flush_bytes,
        }
    }

    /// Copy `data` in; true once at least `flush_bytes` are buffered.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.buf.capacity() == 0 && !data.is_empty() {
            // One allocation sized for the usual pattern: flush_bytes plus one incoming chunk
            // (capped, so a huge flush_bytes does not allocate up front; Vec grows past it).
            let expect = self.flush_bytes.min(MAX_INITIAL_RESERVE);
            self.buf.reserve_exact(expect.max(data.len()) + data.len());
        }
        self.buf.extend_from_slice(data);
        self.needs_flush()
    }

    pub fn needs_flush(&self) -> bool {
        self.buf.len() >= self.flush_bytes
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Forget the buffered bytes (keeps the allocation for the next feeds).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Forget the buffered bytes and give the memory back.
    pub fn release(&mut self) {
        self.buf = Vec::new();
    }

    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `total` bytes in chunks of `chunk`, return the part sizes that come out.
    fn part_sizes(part_size: u64, total: usize, chunk: usize) -> Vec<u64> {
        let data: Vec<u8> = (0..total).map(|i| i as u8).collect();
        let mut cutter = PartCutter::new(part_size);
        let mut sizes = Vec::new();
        let mut cur = 0u64;
        let mut rebuilt = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            for piece in cutter.cut(c) {
                assert!(!piece.bytes.is_empty());
                cur += piece.bytes.len() as u64;
                assert!(cur <= part_size);
                rebuilt.extend_from_slice(piece.bytes);
                if piece.completes_part {
                    assert_eq!(cur, part_size);
                    sizes.push(cur);
                    cur = 0;
                }
            }
        }
        assert_eq!(cutter.filled(), cur);
        if cur > 0 {
            sizes.push(cur);
        }
        assert_eq!(rebuilt, data);
        sizes
    }

    #[test]
    fn chunk_sizes_from_one_byte_to_three_parts() {
        let ps = 1000u64;
        for total in [0usize, 1, 999, 1000, 1001, 2000, 2500, 3000] {
            let mut want = vec![ps; total / ps as usize];
            if total % ps as usize != 0 {
                want.push((total % ps as usize) as u64);
            }
            for chunk in [1usize, 2, 7, 999, 1000, 1001, 1500, 3000, 5000] {
                assert_eq!(
                    part_sizes(ps, total, chunk),
                    want,
                    "total {total} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn exact_boundaries_complete_parts() {
        let mut c = PartCutter::new(4);
        let pieces: Vec<_> = c.cut(b"abcdefgh").collect();
        assert_eq!(
            pieces,
            vec![
                Piece {
                    bytes: b"abcd",
                    completes_part: true
                },
                Piece {
                    bytes: b"efgh",
                    completes_part: true
                },
            ]
        );
        assert_eq!(c.filled(), 0);
        let pieces: Vec<_> = c.cut(b"ab").collect();
        assert_eq!(
            pieces,
            vec![Piece {
                bytes: b"ab",
                completes_part: false
            }]
        );
        let pieces: Vec<_> = c.cut(b"cdef").collect();
        assert_eq!(
            pieces,
            vec![
                Piece {
                    bytes: b"cd",
                    completes_part: true
                },
                Piece {
                    bytes: b"ef",
                    completes_part: false
                },
            ]
        );
        assert_eq!(c.filled(), 2);
    }

    #[test]
    fn empty_input_gives_nothing() {
        let mut c = PartCutter::new(10);
        assert_eq!(c.cut(b"").count(), 0);
        assert_eq!(part_sizes(10, 0, 1), Vec::<u64>::new());
    }

    #[test]
    fn feed_buffer_signals_and_bounds() {
        let mut b = FeedBuffer::new(100);
        assert_eq!(b.capacity(), 0);
        assert!(!b.feed(&[1; 60]));
        assert!(b.capacity() >= 160 && b.capacity() < 400);
        assert!(b.feed(&[2; 60]));
        assert_eq!(b.len(), 120);
        assert_eq!(&b.as_slice()[59..61], &[1, 2]);
        let cap = b.capacity();
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        b.release();
        assert_eq!(b.capacity(), 0);
        // A huge flush_bytes does not reserve memory up front.
        let mut big = FeedBuffer::new(1 << 40);
        assert!(!big.feed(&[0; 10]));
        assert!(big.capacity() <= MAX_INITIAL_RESERVE + 10);
    }
}

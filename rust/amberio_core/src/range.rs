//! Verified range reader over consecutive part files: whole parts checked by SHA-256 while
//! streaming, 64 KiB blocks checked by CRC32C before any of their bytes is released.
//!
//! Rules (see `RangeReader` in `python/amberio/_core.pyi`):
//! - every part visited is opened and its size checked first (wrong size: integrity error);
//! - a part read whole with known CRCs: each block's CRC32C is checked before its bytes are
//!   returned, the SHA-256 runs over the returned bytes, and the chunk holding the part's last
//!   byte is only returned once the SHA-256 matched;
//! - a part read whole that fits in one chunk is read once, checked (SHA-256, and CRCs when
//!   known, else computed) and returned;
//! - a partial range reads only the aligned blocks it touches and checks their CRCs;
//! - a part without usable CRCs (missing, or a list of the wrong length) first gets a streaming
//!   pass (SHA-256 + CRC32C computation); it is then served like a part with CRCs, and its
//!   computed CRCs are reported by `computed_block_crcs`.
//!
//! Memory: the caller's output buffer (one chunk) plus one 64 KiB block.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::errors::{CoreError, CoreResult};
use crate::hash::{crc32c, crc_at, crc_list_len, parse_sha256_hex, to_hex, BlockCrcs, BLOCK_SIZE};
use crate::parts::IO_SIZE;

const BS: u64 = BLOCK_SIZE as u64;

/// One part file the reader may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    pub block_crc32c: Option<Vec<u8>>,
}

impl PartSpec {
    /// `sha256_hex` must be 64 hex digits.
    pub fn new(
        path: impl Into<PathBuf>,
        size: u64,
        sha256_hex: &str,
        block_crc32c: Option<Vec<u8>>,
    ) -> CoreResult<Self> {
        let sha256 = parse_sha256_hex(sha256_hex).ok_or_else(|| {
            CoreError::invalid(format!("sha256 must be 64 hex digits, got {sha256_hex:?}"))
        })?;
        Ok(Self {
            path: path.into(),
            size,
            sha256,
            block_crc32c,
        })
    }

    /// The block CRCs when present and of the right length for `size`.
    fn usable_crcs(&self) -> Option<&[u8]> {
        self.block_crc32c
            .as_deref()
            .filter(|c| c.len() as u64 == crc_list_len(self.size))
    }
}

struct Current {
    file: File,
    /// Running SHA-256 over returned bytes, for a part read whole whose SHA-256 has not been
    /// checked yet.
    sha: Option<Sha256>,
}

/// Yields verified bytes of consecutive parts, `length` bytes from `offset`.
pub struct RangeReader {
    parts: Vec<PartSpec>,
    chunk_size: u64,
    part_index: usize,
    /// Next byte of the current part to return.
    pos: u64,
    /// End (exclusive) of the requested bytes within the current part.
    end: u64,
    /// True when the requested bytes cover the whole current part.
    whole: bool,
    remaining: u64,
    cur: Option<Current>,
    scratch: Vec<u8>,
    /// Block of the current part whose verified bytes are in `scratch`.
    cached_block: Option<u64>,
    computed: Vec<(usize, Vec<u8>)>,
    failed: Option<CoreError>,
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> CoreResult<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CoreError::integrity(
                path,
                format!(
                    "{}: file ended before byte {} (shrank while being read)",
                    path.display(),
                    offset + buf.len() as u64
                ),
            )
        } else {
            CoreError::io("read", path, e)
        }
    })
}

fn check_sha(path: &Path, got: &[u8], want: &[u8; 32]) -> CoreResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(CoreError::integrity(
            path,
            format!(
                "{}: SHA-256 mismatch: content hashes to {}, expected {}",
                path.display(),
                to_hex(got),
                to_hex(want)
            ),
        ))
    }
}

/// Check the blocks of `data`, which starts at block `first_block` of the part.
fn verify_blocks(path: &Path, crcs: &[u8], first_block: u64, data: &[u8]) -> CoreResult<()> {
    for (i, block) in data.chunks(BLOCK_SIZE).enumerate() {
        let b = first_block + i as u64;
        let want = crc_at(crcs, b as usize);
        let got = crc32c(block);
        if got != want {
            return Err(CoreError::integrity(
                path,
                format!(
                    "{}: CRC32C mismatch in block {b} (bytes {}..{}): {got:08x}, expected {want:08x}",
                    path.display(),
                    b * BS,
                    b * BS + block.len() as u64
                ),
            ));
        }
    }
    Ok(())
}

/// Open a part file and check its size.
fn open_part(spec: &PartSpec) -> CoreResult<File> {
    let file = File::open(&spec.path).map_err(|e| CoreError::io("open", &spec.path, e))?;
    let len = file
        .metadata()
        .map_err(|e| CoreError::io("stat", &spec.path, e))?
        .len();
    if len != spec.size {
        return Err(CoreError::integrity(
            &spec.path,
            format!(
                "{}: size mismatch: file has {len} bytes, expected {}",
                spec.path.display(),
                spec.size
            ),
        ));
    }
    Ok(file)
}

/// Stream a whole part through SHA-256 and CRC32C using `buf`; return its block CRCs when
/// the SHA-256 matched.
fn verification_pass(file: &File, spec: &PartSpec, buf: &mut [u8]) -> CoreResult<Vec<u8>> {
    let mut sha = Sha256::new();
    let mut crcs = BlockCrcs::new();
    let mut off = 0u64;
    while off < spec.size {
        let n = (buf.len() as u64).min(spec.size - off) as usize;
        let piece = &mut buf[..n];
        read_exact_at(file, &spec.path, piece, off)?;
        sha.update(&*piece);
        crcs.update(piece);
        off += n as u64;
    }
    check_sha(&spec.path, &sha.finalize(), &spec.sha256)?;
    Ok(crcs.finish())
}

/// Verify a whole part file (size, SHA-256) and return its block CRCs. Used by scrubbing.
pub fn verify_part(spec: &PartSpec) -> CoreResult<Vec<u8>> {
    let file = open_part(spec)?;
    let mut buf = vec![0u8; IO_SIZE.min(spec.size.max(1) as usize)];
    verification_pass(&file, spec, &mut buf)
}

impl RangeReader {
    /// `offset` is relative to the start of `parts[0]`; `offset + length` must not exceed the
    /// parts' total size; `chunk_size` must be > 0. No I/O happens here.
    pub fn new(
        parts: Vec<PartSpec>,
        offset: u64,
        length: u64,
        chunk_size: u64,
    ) -> CoreResult<Self> {
        if chunk_size == 0 {
            return Err(CoreError::invalid("chunk_size must be > 0"));
        }
        let total: u64 = parts.iter().map(|p| p.size).sum();
        match offset.checked_add(length) {
            Some(end) if end <= total => {}
            _ => {
                return Err(CoreError::invalid(format!(
                    "range {offset}+{length} exceeds the parts' total size {total}"
                )))
            }
        }
        let mut reader = Self {
            parts,
            chunk_size,
            part_index: 0,
            pos: 0,
            end: 0,
            whole: false,
            remaining: length,
            cur: None,
            scratch: Vec::new(),
            cached_block: None,
            computed: Vec::new(),
            failed: None,
        };
        if length > 0 {
            // Find the part holding `offset` (skipping parts that end at or before it).
            let mut start = 0u64;
            let mut idx = 0usize;
            while start + reader.parts[idx].size <= offset {
                start += reader.parts[idx].size;
                idx += 1;
            }
            reader.set_part(idx, offset - start);
        }
        Ok(reader)
    }

    fn set_part(&mut self, idx: usize, pos: u64) {
        let size = self.parts[idx].size;
        self.part_index = idx;
        self.pos = pos;
        self.end = size.min(pos + self.remaining);
        self.whole = pos == 0 && self.end == size;
        self.cur = None;
        self.cached_block = None;
    }

    /// Bytes not yet returned.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// `(index into parts, CRCs)` for the parts without usable CRCs that were verified.
    pub fn computed_block_crcs(&self) -> &[(usize, Vec<u8>)] {
        &self.computed
    }

    /// Length of the next chunk (0 when done). Within one part; at most `chunk_size`; past
    /// the first chunk of a part, chunks start on block boundaries when `chunk_size` allows.
    pub fn next_len(&self) -> CoreResult<usize> {
        if let Some(e) = &self.failed {
            return Err(e.replay());
        }
        if self.remaining == 0 {
            return Ok(0);
        }
        let x = self.pos;
        let left = self.end - x;
        let y = if left <= self.chunk_size {
            self.end
        } else if self.chunk_size >= BS {
            let aligned = (x + self.chunk_size) / BS * BS;
            if aligned > x {
                aligned
            } else {
                x + self.chunk_size
            }
        } else {
            x + self.chunk_size
        };
        Ok((y - x) as usize)
    }

    /// Fill `out` (exactly `next_len()` bytes) with the next verified chunk.
    pub fn fill(&mut self, out: &mut [u8]) -> CoreResult<()> {
        if let Some(e) = &self.failed {
            return Err(e.replay());
        }
        debug_assert_eq!(out.len(), self.next_len().unwrap_or(0));
        if out.is_empty() {
            return Ok(());
        }
        let r = self.fill_inner(out);
        if let Err(e) = &r {
            self.failed = Some(e.replay());
            self.cur = None;
            self.cached_block = None;
        }
        r
    }

    /// Read and check the next chunk into `out`, or return an error; convenience for tests
    /// and pure-Rust callers.
    pub fn read_chunk_vec(&mut self) -> CoreResult<Option<Vec<u8>>> {
        let n = self.next_len()?;
        if n == 0 {
            return Ok(None);
        }
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(Some(v))
    }

    fn fill_inner(&mut self, out: &mut [u8]) -> CoreResult<()> {
        let x = self.pos;
        let y = x + out.len() as u64;
        let idx = self.part_index;
        let mut served = false;
        if self.cur.is_none() {
            served = self.enter_part(x, y, out)?;
        }
        if !served {
            let spec = &self.parts[idx];
            let cur = self.cur.as_mut().expect("entered above");
            let crcs = spec
                .block_crc32c
                .as_deref()
                .expect("CRCs are known once a part is entered");
            serve(
                &cur.file,
                spec,
                crcs,
                &mut self.scratch,
                &mut self.cached_block,
                x,
                y,
                out,
            )?;
            if let Some(sha) = cur.sha.as_mut() {
                sha.update(&*out);
                if y == spec.size {
                    let sha = cur.sha.take().expect("present");
                    check_sha(&spec.path, &sha.finalize(), &spec.sha256)?;
                }
            }
        }
        self.pos = y;
        self.remaining -= out.len() as u64;
        if self.pos == self.end {
            self.cur = None;
            self.cached_block = None;
            if self.remaining > 0 {
                let mut next = idx + 1;
                while self.parts[next].size == 0 {
                    next += 1;
                }
                self.set_part(next, 0);
            }
        }
        Ok(())
    }

    /// Open the current part. Returns true when it was read whole into `out` already.
    fn enter_part(&mut self, x: u64, y: u64, out: &mut [u8]) -> CoreResult<bool> {
        let idx = self.part_index;
        let spec = &self.parts[idx];
        let file = open_part(spec)?;
        let known = spec.usable_crcs().is_some();
        if self.whole && x == 0 && y == spec.size {
            // The whole part fits in this chunk: one read, checked before anything is returned.
            let mut off = 0usize;
            while off < out.len() {
                let n = IO_SIZE.min(out.len() - off);
                read_exact_at(&file, &spec.path, &mut out[off..off + n], off as u64)?;
                off += n;
            }
            check_sha(&spec.path, &Sha256::digest(&*out), &spec.sha256)?;
            match spec.usable_crcs() {
                Some(crcs) => verify_blocks(&spec.path, crcs, 0, out)?,
                None => self.computed.push((idx, crate::hash::block_crcs(out))),
            }
            return Ok(true);
        }
        let sha = if known {
            self.whole.then(Sha256::new)
        } else {
            // First pass, with the output buffer as I/O buffer when it is big enough.
            let crcs = if out.len() >= BLOCK_SIZE {
                let n = out.len().min(IO_SIZE);
                verification_pass(&file, spec, &mut out[..n])?
            } else {
                self.scratch.resize(BLOCK_SIZE, 0);
                self.cached_block = None;
                verification_pass(&file, spec, &mut self.scratch)?
            };
            self.computed.push((idx, crcs.clone()));
            self.parts[idx].block_crc32c = Some(crcs);
            None
        };
        self.cur = Some(Current { file, sha });
        Ok(false)
    }
}

/// Copy verified bytes `[x, y)` of a part into `out`. Full blocks are read straight into `out`
/// and checked there; a block only partly wanted goes through `scratch`, and stays cached.
#[allow(clippy::too_many_arguments)]
fn serve(
    file: &File,
    spec: &PartSpec,
    crcs: &[u8],
    scratch: &mut Vec<u8>,
    cached_block: &mut Option<u64>,
    x: u64,
    y: u64,
    out: &mut [u8],
) -> CoreResult<()> {
    let size = spec.size;
    let mut pos = x;
    while pos < y {
        let b = pos / BS;
        let bstart = b * BS;
        let bend = (bstart + BS).min(size);
        if pos == bstart && y >= bend {
            let run_end = if y == size { size } else { y / BS * BS };
            while pos < run_end {
                let n = (IO_SIZE as u64).min(run_end - pos);
                let dst = &mut out[(pos - x) as usize..(pos - x + n) as usize];
                read_exact_at(file, &spec.path, dst, pos)?;
                verify_blocks(&spec.path, crcs, pos / BS, dst)?;
                pos += n;
            }
        } else {
            let blen = (bend - bstart) as usize;
            if *cached_block != Some(b) {
                *cached_block = None;
                scratch.resize(BLOCK_SIZE, 0);
                read_exact_at(file, &spec.path, &mut scratch[..blen], bstart)?;
                verify_blocks(&spec.path, crcs, b, &scratch[..blen])?;
                *cached_block = Some(b);
            }
            let take_end = y.min(bend);
            out[(pos - x) as usize..(take_end - x) as usize]
                .copy_from_slice(&scratch[(pos - bstart) as usize..(take_end - bstart) as usize]);
            pos = take_end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{block_crcs, sha256_hex};
    use std::fs;

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| ((i.wrapping_mul(2654435761) >> 9) as u8) ^ seed)
            .collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        parts: Vec<PartSpec>,
        bytes: Vec<u8>,
    }

    /// Parts of the given sizes, with CRCs or without.
    fn fixture(sizes: &[usize], with_crcs: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = Vec::new();
        let mut bytes = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let d = data(n, i as u8);
            let path = dir.path().join(format!("part.{i:08}"));
            fs::write(&path, &d).unwrap();
            parts.push(
                PartSpec::new(
                    path,
                    n as u64,
                    &sha256_hex(&d),
                    with_crcs.then(|| block_crcs(&d)),
                )
                .unwrap(),
            );
            bytes.extend_from_slice(&d);
        }
        Fixture {
            _dir: dir,
            parts,
            bytes,
        }
    }

    fn read_all(r: &mut RangeReader, chunk: u64) -> CoreResult<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = r.read_chunk_vec()? {
            assert!(!c.is_empty());
            assert!(c.len() as u64 <= chunk);
            out.extend_from_slice(&c);
        }
        assert_eq!(r.remaining(), 0);
        Ok(out)
    }

    fn read(f: &Fixture, offset: u64, length: u64, chunk: u64) -> CoreResult<Vec<u8>> {
        let mut r = RangeReader::new(f.parts.clone(), offset, length, chunk)?;
        assert_eq!(r.remaining(), length);
        read_all(&mut r, chunk)
    }

    const K: usize = BLOCK_SIZE;

    #[test]
    fn whole_partial_and_multipart_ranges() {
        for with_crcs in [true, false] {
            let f = fixture(&[3 * K + 100, 3 * K + 100, 5000], with_crcs);
            let total = f.bytes.len() as u64;
            let ranges = [
                (0, total),
                (0, 1),
                (1, 10),
                (K as u64 - 5, 10),
                (K as u64, K as u64),
                (100, 3 * K as u64),
                (3 * K as u64 + 50, 200),
                (3 * K as u64 + 100, 3 * K as u64 + 100),
                (2 * K as u64, 2 * K as u64 + 5000),
                (total - 1, 1),
                (total, 0),
                (5, 0),
            ];
            for chunk in [1u64, 1000, K as u64, K as u64 + 1, 1 << 20, 8 << 20] {
                for &(off, len) in &ranges {
                    if chunk == 1 && len > 70_000 {
                        continue;
                    }
                    let got = read(&f, off, len, chunk).unwrap();
                    assert_eq!(
                        got,
                        &f.bytes[off as usize..(off + len) as usize],
                        "crcs {with_crcs} chunk {chunk} range {off}+{len}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunks_after_the_first_are_block_aligned() {
        let f = fixture(&[10 * K], true);
        let mut r = RangeReader::new(f.parts.clone(), 100, 9 * K as u64, 3 * K as u64 + 7).unwrap();
        let mut starts = vec![];
        let mut pos = 100u64;
        while let Some(c) = r.read_chunk_vec().unwrap() {
            starts.push(pos);
            pos += c.len() as u64;
        }
        assert_eq!(starts[0], 100);
        assert!(starts[1..].iter().all(|s| s % BS == 0), "{starts:?}");
    }

    #[test]
    fn computed_crcs_for_parts_without_them() {
        let f = fixture(&[2 * K + 1, 100, 3 * K], false);
        let mut r = RangeReader::new(f.parts.clone(), 0, f.bytes.len() as u64, 1 << 20).unwrap();
        assert_eq!(read_all(&mut r, 1 << 20).unwrap(), f.bytes);
        let got: Vec<(usize, Vec<u8>)> = r.computed_block_crcs().to_vec();
        let want: Vec<(usize, Vec<u8>)> = (0..3)
            .map(|i| {
                let start: usize = f.parts[..i].iter().map(|p| p.size as usize).sum();
                (
                    i,
                    block_crcs(&f.bytes[start..start + f.parts[i].size as usize]),
                )
            })
            .collect();
        assert_eq!(got, want);
        // A partial read of a part without CRCs computes them too; only touched parts count.
        let mut r = RangeReader::new(f.parts.clone(), 10, 20, 4096).unwrap();
        read_all(&mut r, 4096).unwrap();
        assert_eq!(r.computed_block_crcs().len(), 1);
        assert_eq!(r.computed_block_crcs()[0].0, 0);
        // Parts with CRCs report nothing.
        let g = fixture(&[2 * K + 1], true);
        let mut r = RangeReader::new(g.parts.clone(), 0, g.bytes.len() as u64, 4096).unwrap();
        read_all(&mut r, 4096).unwrap();
        assert!(r.computed_block_crcs().is_empty());
    }

    #[test]
    fn wrong_length_crcs_are_recomputed() {
        let mut f = fixture(&[2 * K + 1], true);
        f.parts[0].block_crc32c = Some(vec![1, 2, 3]);
        let mut r = RangeReader::new(f.parts.clone(), 5, 10, 4096).unwrap();
        assert_eq!(read_all(&mut r, 4096).unwrap(), &f.bytes[5..15]);
        assert_eq!(r.computed_block_crcs()[0].1, block_crcs(&f.bytes));
    }

    fn corrupt(path: &Path, at: u64) {
        let mut d = fs::read(path).unwrap();
        d[at as usize] ^= 0x40;
        fs::write(path, d).unwrap();
    }

    fn expect_integrity(r: CoreResult<Vec<u8>>, what: &str) -> String {
        match r {
            Err(CoreError::Integrity { message, path }) => {
                assert!(message.contains(&*path.to_string_lossy()), "{message}");
                assert!(message.contains(what), "{message}");
                message
            }
            other => panic!("expected an integrity error, got {other:?}"),
        }
    }

    #[test]
    fn corrupted_byte_is_detected_before_release() {
        for with_crcs in [true, false] {
            let f = fixture(&[4 * K, 3 * K], with_crcs);
            corrupt(&f.parts[0].path, 2 * K as u64 + 17);
            let what = if with_crcs { "CRC32C" } else { "SHA-256" };
            // Whole read: the bad block is never returned.
            let mut r =
                RangeReader::new(f.parts.clone(), 0, f.bytes.len() as u64, K as u64).unwrap();
            let mut got = Vec::new();
            let err = loop {
                match r.read_chunk_vec() {
                    Ok(Some(c)) => got.extend_from_slice(&c),
                    Ok(None) => panic!("corruption not detected"),
                    Err(e) => break e,
                }
            };
            assert!(err.is_integrity());
            assert!(got.len() <= 2 * K, "bytes of the bad block were released");
            assert_eq!(got, &f.bytes[..got.len()]);
            // The reader stays failed.
            assert!(r.read_chunk_vec().unwrap_err().is_integrity());
            // Partial read of the bad block.
            expect_integrity(read(&f, 2 * K as u64 + 10, 20, 4096), what);
            // Partial reads elsewhere still work when CRCs are known.
            let ok = read(&f, 10, 100, 4096);
            if with_crcs {
                assert_eq!(ok.unwrap(), &f.bytes[10..110]);
                let ok = read(&f, 4 * K as u64, 3 * K as u64, 1 << 20).unwrap();
                assert_eq!(ok, &f.bytes[4 * K..]);
            } else {
                expect_integrity(ok, "SHA-256");
            }
        }
    }

    #[test]
    fn sha_mismatch_with_valid_crcs_holds_back_last_chunk() {
        // CRCs that match the (wrong) content: only the SHA-256 can tell.
        let f = fixture(&[3 * K], true);
        let path = f.parts[0].path.clone();
        corrupt(&path, 3 * K as u64 - 1);
        let bad = fs::read(&path).unwrap();
        let mut parts = f.parts.clone();
        parts[0].block_crc32c = Some(block_crcs(&bad));
        let mut r = RangeReader::new(parts.clone(), 0, 3 * K as u64, K as u64).unwrap();
        assert!(r.read_chunk_vec().unwrap().is_some());
        assert!(r.read_chunk_vec().unwrap().is_some());
        expect_integrity(r.read_chunk_vec().map(|c| c.unwrap()), "SHA-256");
        // In one chunk as well.
        let mut r = RangeReader::new(parts, 0, 3 * K as u64, 1 << 20).unwrap();
        expect_integrity(r.read_chunk_vec().map(|c| c.unwrap()), "SHA-256");
    }

    #[test]
    fn small_chunks_over_a_whole_part_verify_once() {
        let f = fixture(&[K + 10], true);
        let got = read(&f, 0, K as u64 + 10, 1000).unwrap();
        assert_eq!(got, f.bytes);
    }

    #[test]
    fn wrong_size_is_an_integrity_error() {
        for with_crcs in [true, false] {
            let f = fixture(&[K + 10, 100], with_crcs);
            let mut d = fs::read(&f.parts[0].path).unwrap();
            d.push(0);
            fs::write(&f.parts[0].path, &d).unwrap();
            expect_integrity(read(&f, 0, 10, 4096), "size mismatch");
            expect_integrity(read(&f, 0, f.bytes.len() as u64, 1 << 20), "size mismatch");
            d.truncate(5);
            fs::write(&f.parts[0].path, &d).unwrap();
            expect_integrity(read(&f, 0, 3, 4096), "size mismatch");
            // The second part alone is still fine.
            assert_eq!(
                read(&f, K as u64 + 10, 100, 4096).unwrap(),
                &f.bytes[K + 10..]
            );
        }
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let f = fixture(&[100], true);
        fs::remove_file(&f.parts[0].path).unwrap();
        match read(&f, 0, 10, 4096) {
            Err(CoreError::Io { source, path, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(path.as_deref(), Some(f.parts[0].path.as_path()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_arguments() {
        let f = fixture(&[100, 50], true);
        assert!(matches!(
            RangeReader::new(f.parts.clone(), 100, 51, 10),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            RangeReader::new(f.parts.clone(), u64::MAX, 2, 10),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            RangeReader::new(f.parts.clone(), 0, 1, 0),
            Err(CoreError::Invalid(_))
        ));
        assert!(PartSpec::new("x", 1, "zz", None).is_err());
        let mut r = RangeReader::new(Vec::new(), 0, 0, 10).unwrap();
        assert_eq!(r.read_chunk_vec().unwrap(), None);
    }

    #[test]
    fn zero_size_parts_are_skipped() {
        let f = fixture(&[100, 0, 50], true);
        assert_eq!(read(&f, 0, 150, 4096).unwrap(), f.bytes);
        assert_eq!(read(&f, 100, 50, 4096).unwrap(), &f.bytes[100..]);
        assert_eq!(read(&f, 90, 20, 4096).unwrap(), &f.bytes[90..110]);
    }

    #[test]
    fn verify_part_checks_sha_and_size() {
        let f = fixture(&[3 * K + 5], false);
        assert_eq!(verify_part(&f.parts[0]).unwrap(), block_crcs(&f.bytes));
        corrupt(&f.parts[0].path, 7);
        assert!(verify_part(&f.parts[0]).unwrap_err().is_integrity());
        let g = fixture(&[0], false);
        assert!(verify_part(&g.parts[0]).unwrap().is_empty());
    }
}

//! Hashing: streaming SHA-256 + MD5 object hasher, CRC32C checksums over 64 KiB blocks, hex.

use md5::Md5;
use sha2::{Digest, Sha256};

/// Bytes covered by one CRC32C block checksum.
pub const BLOCK_SIZE: usize = 64 * 1024;

/// Bytes of one stored block checksum (little-endian u32).
pub const CRC_LEN: usize = 4;

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// Parse a 64-digit hex SHA-256 (either case). `None` when malformed.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// SHA-256 of `data`, as raw bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&sha256(data))
}

/// Number of CRC32C blocks of a part of `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

/// Length in bytes of the block-checksum list of a part of `size` bytes.
pub fn crc_list_len(size: u64) -> u64 {
    block_count(size) * CRC_LEN as u64
}

/// The stored CRC32C of block `index` in a checksum list (which must be long enough).
pub fn crc_at(crcs: &[u8], index: usize) -> u32 {
    let at = index * CRC_LEN;
    u32::from_le_bytes([crcs[at], crcs[at + 1], crcs[at + 2], crcs[at + 3]])
}

/// CRC32C (hardware-accelerated where the CPU has it) of one buffer.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Block checksums of a whole in-memory part: little-endian u32 CRC32C per `BLOCK_SIZE` block.
pub fn block_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crc_list_len(data.len() as u64) as usize);
    for block in data.chunks(BLOCK_SIZE) {
        out.extend_from_slice(&crc32c(block).to_le_bytes());
    }
    out
}

/// Streaming block checksums: feed bytes in any slicing, get the per-block CRC32C list.
#[derive(Debug, Default, Clone)]
pub struct BlockCrcs {
    out: Vec<u8>,
    cur: u32,
    cur_len: usize,
}

impl BlockCrcs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (BLOCK_SIZE - self.cur_len).min(data.len());
            let (head, rest) = data.split_at(take);
            self.cur = crc32c::crc32c_append(self.cur, head);
            self.cur_len += take;
            if self.cur_len == BLOCK_SIZE {
                self.out.extend_from_slice(&self.cur.to_le_bytes());
                self.cur = 0;
                self.cur_len = 0;
            }
            data = rest;
        }
    }

    /// The checksum list; a trailing short block gets its own entry.
    pub fn finish(mut self) -> Vec<u8> {
        if self.cur_len > 0 {
            self.out.extend_from_slice(&self.cur.to_le_bytes());
        }
        self.out
    }
}

/// Inputs at least this large get their MD5 computed on a helper thread (MD5 is the slowest
/// of the hashes and cannot be split, so it runs beside the rest of the work).
pub const PARALLEL_MD5_MIN: usize = 256 * 1024;

/// Feed `data` to `md5` and run `other` at the same time: on a scoped helper thread when
/// `data` is large (inline when it is small, or when no thread can be started).
pub fn md5_beside<R>(md5: &mut Md5, data: &[u8], other: impl FnOnce() -> R) -> R {
    if data.len() < PARALLEL_MD5_MIN {
        md5.update(data);
        return other();
    }
    std::thread::scope(|scope| {
        let mut lane = md5.clone();
        let helper = std::thread::Builder::new()
            .name("amberio-md5".into())
            .spawn_scoped(scope, move || {
                lane.update(data);
                lane
            });
        match helper {
            Ok(helper) => {
                let r = other();
                match helper.join() {
                    Ok(done) => *md5 = done,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
                r
            }
            Err(_) => {
                md5.update(data);
                other()
            }
        }
    })
}

/// Streaming SHA-256 + MD5 over a body.
#[derive(Clone, Default)]
pub struct ObjectHasher {
    sha: Sha256,
    md5: Md5,
    size: u64,
}

impl ObjectHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        let sha = &mut self.sha;
        md5_beside(&mut self.md5, data, || sha.update(data));
        self.size += data.len() as u64;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// `(sha256_hex, md5_hex)`.
    pub fn finish(self) -> (String, String) {
        (to_hex(&self.sha.finalize()), to_hex(&self.md5.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC_SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
    const ABC_MD5: &str = "900150983cd24fb0d6963f7d28e17f72";

    #[test]
    fn hex_roundtrip() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        let raw = parse_sha256_hex(ABC_SHA).unwrap();
        assert_eq!(to_hex(&raw), ABC_SHA);
        assert_eq!(parse_sha256_hex(&ABC_SHA.to_uppercase()), Some(raw));
        assert_eq!(parse_sha256_hex("abc"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn sha256_known() {
        assert_eq!(sha256_hex(b""), EMPTY_SHA);
        assert_eq!(sha256_hex(b"abc"), ABC_SHA);
    }

    #[test]
    fn object_hasher_streaming_matches_one_shot() {
        let mut h = ObjectHasher::new();
        assert_eq!(h.clone().finish(), (EMPTY_SHA.into(), EMPTY_MD5.into()));
        h.update(b"a");
        h.update(b"");
        h.update(b"bc");
        assert_eq!(h.size(), 3);
        assert_eq!(h.finish(), (ABC_SHA.into(), ABC_MD5.into()));
    }

    #[test]
    fn object_hasher_large_updates_use_the_md5_lane() {
        let data: Vec<u8> = (0..(3 * PARALLEL_MD5_MIN + 5))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut one = ObjectHasher::new();
        one.update(&data[..10]);
        one.update(&data[10..]);
        let mut small = ObjectHasher::new();
        for piece in data.chunks(1000) {
            small.update(piece);
        }
        let want = (to_hex(&Sha256::digest(&data)), to_hex(&Md5::digest(&data)));
        assert_eq!(one.finish(), want);
        assert_eq!(small.finish(), want);
    }

    #[test]
    fn crc32c_known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros -> 0x8a9136aa; "123456789" -> 0xe3069283.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn block_crcs_streaming_matches_one_shot() {
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE + 123))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let whole = block_crcs(&data);
        assert_eq!(whole.len(), 4 * CRC_LEN);
        assert_eq!(crc_at(&whole, 1), crc32c(&data[BLOCK_SIZE..2 * BLOCK_SIZE]));
        assert_eq!(crc_at(&whole, 3), crc32c(&data[3 * BLOCK_SIZE..]));
        for step in [
            1usize,
            7,
            4096,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            1 << 20,
        ] {
            let mut s = BlockCrcs::new();
            for piece in data.chunks(step) {
                s.update(piece);
            }
            assert_eq!(s.finish(), whole, "step {step}");
        }
        assert!(block_crcs(&[]).is_empty());
        assert!(BlockCrcs::new().finish().is_empty());
        assert_eq!(block_crcs(&data[..BLOCK_SIZE]).len(), CRC_LEN);
    }

    #[test]
    fn block_arithmetic() {
        assert_eq!(block_count(0), 0);
        assert_eq!(block_count(1), 1);
        assert_eq!(block_count(BLOCK_SIZE as u64), 1);
        assert_eq!(block_count(BLOCK_SIZE as u64 + 1), 2);
        assert_eq!(crc_list_len(8 << 20), 128 * 4);
    }
}

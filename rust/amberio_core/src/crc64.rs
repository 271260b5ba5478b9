//! CRC-64/NVME (the checksum AWS CLI v2 sends by default), slicing-by-8, chained like zlib.crc32.

/// Reflected form of the CRC-64/NVME polynomial 0xAD93D23594C93659.
const POLY_REFLECTED: u64 = 0x9A6C_9329_AC4B_C9B5;

/// Eight 256-entry tables: `TABLES[k][b]` is the CRC of byte `b` followed by `k` zero bytes,
/// so the loop folds 8 input bytes per step.
static TABLES: [[u64; 256]; 8] = build_tables();

const fn build_tables() -> [[u64; 256]; 8] {
    let mut tables = [[0u64; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut crc = b as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let prev = tables[k - 1][b];
            tables[k][b] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            b += 1;
        }
        k += 1;
    }
    tables
}

/// CRC-64/NVME of `data` continuing from `previous`, the finished CRC of the bytes before it
/// (0 for none): `crc64nvme(b, crc64nvme(a, 0)) == crc64nvme(a ++ b, 0)`.
pub fn crc64nvme(data: &[u8], previous: u64) -> u64 {
    let mut crc = !previous;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = crc ^ u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8)"));
        crc = TABLES[7][(word & 0xFF) as usize]
            ^ TABLES[6][((word >> 8) & 0xFF) as usize]
            ^ TABLES[5][((word >> 16) & 0xFF) as usize]
            ^ TABLES[4][((word >> 24) & 0xFF) as usize]
            ^ TABLES[3][((word >> 32) & 0xFF) as usize]
            ^ TABLES[2][((word >> 40) & 0xFF) as usize]
            ^ TABLES[1][((word >> 48) & 0xFF) as usize]
            ^ TABLES[0][(word >> 56) as usize];
    }
    for &byte in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u64::from(byte)) & 0xFF) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time reference, independent of the tables.
    fn reference(data: &[u8]) -> u64 {
        let mut crc = u64::MAX;
        for &byte in data {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_value_of_the_catalogue() {
        assert_eq!(crc64nvme(b"123456789", 0), 0xAE8B_1486_0A79_9888);
        assert_eq!(crc64nvme(b"", 0), 0);
    }

    #[test]
    fn matches_the_bitwise_reference_and_chains() {
        let data: Vec<u8> = (0..10_007u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole = crc64nvme(&data, 0);
        assert_eq!(whole, reference(&data));
        for cut in [0, 1, 7, 8, 9, 4096, 10_006, 10_007] {
            let (a, b) = data.split_at(cut);
            assert_eq!(crc64nvme(b, crc64nvme(a, 0)), whole, "cut at {cut}");
        }
    }
}

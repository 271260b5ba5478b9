//! Slot hash of contract §4: `int.from_bytes(sha256(path_utf8)[0:8], "big") % total_slots`.

use sha2::{Digest, Sha256};

/// The slot a blob path belongs to. `total_slots` must be > 0 (checked by the caller).
pub fn slot_for_path(path: &str, total_slots: u64) -> u64 {
    assert!(total_slots > 0, "total_slots must be > 0");
    let digest = Sha256::digest(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % total_slots
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed with Python:
    // int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "big") % n
    #[test]
    fn known_values() {
        for (path, n, want) in KNOWN {
            assert_eq!(slot_for_path(path, *n), *want, "{path} % {n}");
        }
    }

    #[test]
    fn long_path() {
        assert_eq!(slot_for_path(&"x".repeat(1024), 2048), LONG_X_1024);
    }

    #[test]
    fn one_slot_and_full_range() {
        assert_eq!(slot_for_path("anything", 1), 0);
        // With u64::MAX slots the value is the first 8 digest bytes (mod 2^64-1).
        let d = Sha256::digest(b"abc");
        let v = u64::from_be_bytes(d[..8].try_into().unwrap());
        assert_eq!(slot_for_path("abc", u64::MAX), v % u64::MAX);
    }

    #[test]
    #[should_panic]
    fn zero_slots_panics() {
        slot_for_path("a", 0);
    }

    const KNOWN: &[(&str, u64, u64)] = &[
        ("", 2048, 1044),
        ("a", 2048, 1482),
        ("abc", 2048, 2026),
        ("images/2026/a.png", 2048, 1274),
        ("cases/a.bin", 2048, 1344),
        ("bucket/key with spaces", 2048, 164),
        ("héllo/wörld", 2048, 137),
        ("images/2026/a.png", 7, 0),
        ("abc", 1000003, 127581),
    ];
    /// slot of "x" * 1024 with 2048 slots.
    const LONG_X_1024: u64 = 1600;
}

//! Bin ids and keys: CSPRNG generation, validation, hashing and constant-time checks.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// First path segments that are never bin ids.
pub const RESERVED: &[&str] = &[
    "api",
    "i",
    "static",
    "healthz",
    "metrics",
    "favicon.ico",
    "robots.txt",
];

/// A 26-char lowercase base32 token of 128 bits from the OS CSPRNG.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

/// A random u64 from the OS CSPRNG (epochs, jitter).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    u64::from_le_bytes(bytes)
}

/// A new bin epoch: random, 53 bits so it fits a JSON number exactly.
pub fn new_epoch() -> u64 {
    random_u64() >> 11
}

/// The stored form of a key: SHA-256 of its bytes (keys are 128-bit random, so no slow hash is needed).
pub type KeyHash = [u8; 32];

/// Hash a key for storage.
pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time check of a presented key against a stored hash.
pub fn key_matches(stored: &KeyHash, presented: &str) -> bool {
    let presented = hash_key(presented);
    stored.ct_eq(&presented).into()
}

/// Check a user-chosen bin id: `[a-z0-9][a-z0-9-]{2,63}` and not reserved.
pub fn validate_bin_id(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    let shape_ok = (3..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !shape_ok {
        return Err(format!(
            "bin id `{id}` must match [a-z0-9][a-z0-9-]{{2,63}}"
        ));
    }
    if RESERVED.contains(&id) {
        return Err(format!("bin id `{id}` is reserved"));
    }
    Ok(())
}

/// Check a user-chosen bin key: at least 22 visible ASCII characters.
pub fn validate_bin_key(key: &str) -> Result<(), String> {
    if key.len() < 22 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("bin key must have at least 22 visible ASCII characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_valid_ids() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(validate_bin_id(&a).is_ok());
        assert!(validate_bin_key(&a).is_ok());
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_bin_id("my-bin").is_ok());
        assert!(validate_bin_id("api").is_err());
        assert!(validate_bin_id("-ab").is_err());
        assert!(validate_bin_id("ab").is_err());
        assert!(validate_bin_id("Abc").is_err());
        assert!(validate_bin_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn keys_compare_by_hash() {
        let h = hash_key("k".repeat(22).as_str());
        assert!(key_matches(&h, &"k".repeat(22)));
        assert!(!key_matches(&h, &"k".repeat(23)));
    }
}

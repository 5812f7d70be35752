//! Erasure (SPEC section 9): the one-way keyed pseudonym an erased user's
//! ledger is kept under. Without the key, a pseudonym cannot be computed
//! from a user id (nor tried against a list of them); with it, the same user
//! always gets the same pseudonym, so an erasure run again after a crash
//! continues where it stopped.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::ids::{OperationId, UserId};

/// The key is a deployment secret of at least 32 bytes (256 bits, as HMAC-SHA256 wants).
pub const MIN_KEY_BYTES: usize = 32;
/// Pseudonyms start with this, so an erased account is recognisable as one.
pub const PSEUDONYM_PREFIX: &str = "erased-";

/// The erasure key. Its `Debug` never shows it.
pub struct ErasureKey(Vec<u8>);

impl std::fmt::Debug for ErasureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErasureKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the erasure key has {0} bytes; it needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)"
)]
pub struct KeyTooShort(pub usize);

impl ErasureKey {
    /// A key from its bytes (surrounding whitespace, as a key file ends, ignored).
    pub fn new(bytes: &[u8]) -> Result<Self, KeyTooShort> {
        let text = bytes.trim_ascii();
        if text.len() < MIN_KEY_BYTES {
            return Err(KeyTooShort(text.len()));
        }
        Ok(Self(text.to_vec()))
    }
}

/// `erased-` and the first 128 bits of HMAC-SHA256(key, user id), in hex,
/// for the user's first erasure; later ones (of an account opened again
/// under the same id) hash `{user id}#{generation}` (`#` is in no user id),
/// so each erased ledger is kept apart.
pub fn pseudonym(key: &ErasureKey, user: &UserId, generation: u32) -> UserId {
    #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes a key of any length");
    mac.update(user.as_str().as_bytes());
    if generation > 1 {
        mac.update(format!("#{generation}").as_bytes());
    }
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    #[allow(
        clippy::expect_used,
        reason = "a prefix and hex digits make a valid id"
    )]
    UserId::parse(format!("{PSEUDONYM_PREFIX}{hex}"))
        .expect("a prefix and hex digits make a valid id")
}

/// The operation id of the `erase` entry that closes an account. The same
/// for every account: it names neither the user nor the pseudonym, so the
/// `Points Erased` event (which names the user) does not tie the two.
pub fn erase_operation_id() -> OperationId {
    #[allow(clippy::expect_used, reason = "a constant valid id")]
    OperationId::parse("erase").expect("a constant valid id")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ErasureKey {
        ErasureKey::new(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_pseudonym_is_stable_per_key_and_user_and_differs_otherwise() {
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let k1 = key(&"a".repeat(32));
        let k2 = key(&"b".repeat(32));
        assert_eq!(pseudonym(&k1, &alice, 1), pseudonym(&k1, &alice, 1));
        assert_ne!(pseudonym(&k1, &alice, 1), pseudonym(&k1, &alice, 2));
        assert_ne!(pseudonym(&k1, &alice, 1), pseudonym(&k1, &bob, 1));
        assert_ne!(pseudonym(&k1, &alice, 1), pseudonym(&k2, &alice, 1));
        let p = pseudonym(&k1, &alice, 1);
        assert!(p.as_str().starts_with(PSEUDONYM_PREFIX));
        assert_eq!(p.as_str().len(), PSEUDONYM_PREFIX.len() + 32);
        assert!(!p.as_str().contains("alice"));
    }

    #[test]
    fn a_short_key_is_refused_and_a_key_never_shows() {
        assert_eq!(ErasureKey::new(b"short\n").unwrap_err(), KeyTooShort(5));
        let k = key(&format!("{}\n", "s".repeat(40)));
        assert_eq!(format!("{k:?}"), "ErasureKey(..)");
    }
}

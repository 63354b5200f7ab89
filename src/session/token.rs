//! Session tokens: drawn from a CSPRNG, stored only as a SHA-256 hash, checked in
//! constant time. A `Token` never prints itself.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a generated token (`[A-Za-z0-9]`, about 190 bits).
pub const TOKEN_LEN: usize = 32;

/// A session token as handed to the orchestrator once, at creation.
pub struct Token(String);

impl Token {
    /// A fresh random token.
    pub fn generate() -> Self {
        let token = rand::rng()
            .sample_iter(Alphanumeric)
            .take(TOKEN_LEN)
            .map(char::from)
            .collect();
        Token(token)
    }

    /// The token text, for the one response that reveals it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash kept at rest.
    pub fn hash(&self) -> [u8; 32] {
        hash(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a presented token. Tokens carry ~190 random bits, so a fast hash is
/// enough: there is nothing to brute-force from a stolen hash.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is the token whose hash is `stored`, in constant time.
pub fn verify(presented: &str, stored: &[u8; 32]) -> bool {
    hash(presented).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_alphanumeric_and_distinct() {
        let a = Token::generate();
        let b = Token::generate();
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn verify_accepts_only_the_exact_token() {
        let t = Token::generate();
        let stored = t.hash();
        assert!(verify(t.expose(), &stored));
        assert!(!verify(&t.expose()[1..], &stored));
        assert!(!verify(&format!("{}x", t.expose()), &stored));
        assert!(!verify("", &stored));
    }

    #[test]
    fn debug_does_not_print_the_token() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}

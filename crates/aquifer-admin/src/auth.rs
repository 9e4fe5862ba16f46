//! The bearer token every change needs, compared in constant time.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// A bearer token. Its `Debug` and `Display` never show it; read it with
/// [`reveal`](Token::reveal).
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    pub(crate) fn new(token: String) -> Self {
        Self(token.into())
    }

    /// 32 random bytes from the operating system, as 64 hex digits.
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 32];
        // The OS random source failing is not recoverable here; without it
        // no safe token can exist, and a predictable one must not.
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        Self::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token itself, to hand to the operator once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, given: &str) -> bool {
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

//! Authority keys: the responder's long-term identity, pinned by clients.
//!
//! Keys are written the way SV2 pools publish them: base58check of the 32-byte x-only public
//! key (with a version prefix) and of the 32-byte secret, as the `key-utils` crate reads them.

use std::fmt;
use std::str::FromStr;

use key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use secp256k1_sv2::{Keypair, Secp256k1};

/// A key that does not parse, or a pair that does not match.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The public key does not parse.
    #[error("not an SV2 authority public key (base58check x-only key): {0}")]
    Public(String),
    /// The secret key does not parse.
    #[error("not an SV2 authority secret key (base58check): {0}")]
    Secret(String),
    /// The two keys are not a pair.
    #[error("the secret key does not belong to the public key")]
    Mismatch,
}

/// An authority public key, as a client pins it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorityPublicKey([u8; 32]);

impl AuthorityPublicKey {
    /// The x-only key bytes the Noise handshake checks signatures against.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

impl FromStr for AuthorityPublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let k =
            Secp256k1PublicKey::from_str(s.trim()).map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(AuthorityPublicKey(k.into_bytes()))
    }
}

impl fmt::Display for AuthorityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = secp256k1_sv2::XOnlyPublicKey::from_slice(&self.0).map_err(|_| fmt::Error)?;
        Secp256k1PublicKey(k).fmt(f)
    }
}

impl fmt::Debug for AuthorityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityPublicKey({self})")
    }
}

/// The responder's authority key pair.
#[derive(Clone)]
pub struct AuthorityKeypair {
    public: AuthorityPublicKey,
    secret: [u8; 32],
}

impl fmt::Debug for AuthorityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl AuthorityKeypair {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        let secp = Secp256k1::new();
        let kp = Keypair::new(&secp, &mut secp256k1_sv2::rand::thread_rng());
        AuthorityKeypair {
            public: AuthorityPublicKey(kp.x_only_public_key().0.serialize()),
            secret: kp.secret_bytes(),
        }
    }

    /// Reads a pair in base58check form and checks that they belong together.
    ///
    /// # Errors
    /// A key that does not parse, or a secret of another public key.
    pub fn from_strings(public: &str, secret: &str) -> Result<Self, KeyError> {
        let public: AuthorityPublicKey = public.parse()?;
        let sk = Secp256k1SecretKey::from_str(secret.trim())
            .map_err(|e| KeyError::Secret(e.to_string()))?;
        let derived = Secp256k1PublicKey::from(sk).into_bytes();
        if derived != public.0 {
            return Err(KeyError::Mismatch);
        }
        Ok(AuthorityKeypair {
            public,
            secret: sk.into_bytes(),
        })
    }

    /// The public key clients pin.
    pub fn public(&self) -> AuthorityPublicKey {
        self.public
    }

    /// The secret key's bytes, for the Noise responder.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The secret in base58check form, for a config file.
    pub fn secret_string(&self) -> String {
        let sk = secp256k1_sv2::SecretKey::from_slice(&self.secret)
            .expect("held secrets are valid keys");
        Secp256k1SecretKey(sk).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_strings() {
        let kp = AuthorityKeypair::generate();
        let again =
            AuthorityKeypair::from_strings(&kp.public().to_string(), &kp.secret_string()).unwrap();
        assert_eq!(again.public(), kp.public());
        assert_eq!(again.secret_bytes(), kp.secret_bytes());
        let other = AuthorityKeypair::generate();
        assert_eq!(
            AuthorityKeypair::from_strings(&kp.public().to_string(), &other.secret_string())
                .unwrap_err(),
            KeyError::Mismatch
        );
        assert!(matches!(
            "nope".parse::<AuthorityPublicKey>(),
            Err(KeyError::Public(_))
        ));
    }

    #[test]
    fn reads_the_reference_implementations_published_test_key() {
        // The key pair the SV2 reference implementation ships in its examples.
        let kp = AuthorityKeypair::from_strings(
            "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72",
            "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n",
        )
        .unwrap();
        assert_eq!(
            kp.public().to_string(),
            "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"
        );
    }
}

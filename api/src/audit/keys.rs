//! The audit trail's signing keys: Ed25519, as PKCS#8 / SPKI PEM files (what `openssl genpkey
//! -algorithm ED25519` and `rowguard audit keygen` write). The private key is given to
//! `rowguard serve` and never reaches the database; verifiers need only the public key.

use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// A key file could not be read or is not an Ed25519 key. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct KeyError {
    pub path: String,
    pub problem: String,
}

impl KeyError {
    fn new(path: &Path, problem: impl Into<String>) -> Self {
        let shown = path.display().to_string();
        // A key given as the setting's value instead of a file's path (the habit with secrets
        // in environment variables; PEM, base64 or hex) was printed whole in "No such file or
        // directory". A path is shown only when something is there.
        let path = if std::fs::symlink_metadata(path).is_ok() && !shown.contains('\n') {
            shown
        } else {
            "(the value given: nothing is there, and the value is not shown since it may be key \
             material; give the path of a file holding the key)"
                .to_owned()
        };
        Self {
            path,
            problem: problem.into(),
        }
    }
}

/// The largest key file read: a PEM key is a few hundred bytes.
const LARGEST_KEY_FILE: u64 = 64 * 1024;

/// Reads a pipe opened non-blocking until its writer closes it, for at most [`PIPE_WAIT`] and
/// [`LARGEST_KEY_FILE`] bytes.
fn read_pipe(mut pipe: std::fs::File) -> Result<String, &'static str> {
    use std::io::Read as _;
    let started = std::time::Instant::now();
    let deadline = |written: bool| started + if written { PIPE_WRITER_WAIT } else { PIPE_WAIT };
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut written = false;
    loop {
        match pipe.read(&mut chunk) {
            // With no writer yet, a pipe opened non-blocking reads as ended: wait for one.
            Ok(0) if written || std::time::Instant::now() >= deadline(written) => break,
            Ok(0) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Ok(n) => {
                written = true;
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() as u64 > LARGEST_KEY_FILE {
                    return Err("larger than 64 KiB: not a key file");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                written = true;
                if std::time::Instant::now() >= deadline(written) {
                    return Err("the pipe's writer did not finish within 120 s");
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(_) => return Err("the pipe could not be read"),
        }
    }
    if bytes.is_empty() {
        return Err("nothing arrived through the pipe within 5 s");
    }
    String::from_utf8(bytes).map_err(|_| "not text")
}

/// How long a pipe may go without a writer (`--public-key` naming a FIFO nobody writes to), and
/// how long a writer may take to send the key and close (`<(gpg -d key.gpg)` may ask for a
/// passphrase first).
const PIPE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const PIPE_WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A key file's text, at most 64 KiB: a regular file (a symbolic link, as secret volumes mount
/// them, is followed), or a pipe whose writer sends the key within a few seconds (a FIFO no
/// one writes to blocked `audit verify` for ever; a device would never end).
fn read_key_file(path: &Path) -> Result<String, KeyError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| KeyError::new(path, e.to_string()))?;
    let metadata = file
        .metadata()
        .map_err(|e| KeyError::new(path, e.to_string()))?;
    if metadata.file_type().is_fifo() {
        return read_pipe(file).map_err(|problem| KeyError::new(path, problem));
    }
    if !metadata.is_file() {
        return Err(KeyError::new(path, "not a regular file"));
    }
    if metadata.len() > LARGEST_KEY_FILE {
        return Err(KeyError::new(path, "larger than 64 KiB: not a key file"));
    }
    let mut text = String::new();
    file.take(LARGEST_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| KeyError::new(path, e.to_string()))?;
    Ok(text)
}

/// The short name of a public key that checkpoints carry: the first 16 hex digits of the SHA-256
/// of its 32 bytes. It tells the verifier which of its keys to try; it proves nothing by itself.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The sealer's signing key.
pub struct AuditSigner {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("key_id", &self.id)
            .finish()
    }
}

impl AuditSigner {
    /// Reads a PKCS#8 PEM private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let pem = read_key_file(path)?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| KeyError::new(path, "not an Ed25519 private key in PKCS#8 PEM form"))?;
        Ok(Self::new(key))
    }

    pub fn new(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        Self::new(SigningKey::from_bytes(&secret))
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The private key as PKCS#8 PEM, version 1 (the secret alone), as `openssl genpkey`
    /// writes it: OpenSSL 3 and Python's `cryptography` cannot read version 2, which carries
    /// the public key too.
    pub fn private_pem(&self) -> Result<String, String> {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| e.to_string())
    }

    /// The public key as SPKI PEM, for verifiers.
    pub fn public_pem(&self) -> Result<String, String> {
        public_pem(&self.public_key())
    }
}

/// `rowguard audit keygen FILE`: a new private key in FILE (owner-only), its public key in
/// FILE.pub; returns the public key PEM.
pub fn write_new_key(path: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let signer = AuditSigner::generate();
    let private = signer.private_pem()?;
    let public = signer.public_pem()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(private.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let public_path = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.pub", ext.to_string_lossy()),
        None => "pub".to_owned(),
    });
    std::fs::write(&public_path, &public).map_err(|e| format!("{}: {e}", public_path.display()))?;
    Ok(format!(
        "{public}# key id {}; public key written to {}\n",
        signer.key_id(),
        public_path.display()
    ))
}

pub fn public_pem(key: &VerifyingKey) -> Result<String, String> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// Public keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<VerifyingKey>);

impl TrustedKeys {
    /// Reads SPKI PEM public keys (a private key file is accepted too; its public half is used).
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let pem = read_key_file(path)?;
            let key = VerifyingKey::from_public_key_pem(&pem)
                .or_else(|_| SigningKey::from_pkcs8_pem(&pem).map(|k| k.verifying_key()))
                .map_err(|_| KeyError::new(path, "not an Ed25519 public key in PEM form"))?;
            keys.push(key);
        }
        Ok(Self(keys))
    }

    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        Self(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> Vec<VerifyingKey> {
        self.0.clone()
    }

    /// Whether `signature` over `message` was made by the trusted key named `key_id`.
    pub fn verify(&self, key_id: &str, message: &[u8], signature: &[u8]) -> SignatureCheck {
        let Some(key) = self.0.iter().find(|k| self::key_id(k) == key_id) else {
            return SignatureCheck::UnknownKey;
        };
        let Ok(signature) = Signature::from_slice(signature) else {
            return SignatureCheck::Invalid;
        };
        if key.verify(message, &signature).is_ok() {
            SignatureCheck::Valid
        } else {
            SignatureCheck::Invalid
        }
    }
}

/// The result of checking one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    Invalid,
    /// Signed (or claiming to be signed) by a key the verifier was not given.
    UnknownKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_key_and_message() {
        let signer = AuditSigner::generate();
        let other = AuditSigner::generate();
        let keys = TrustedKeys::new(vec![signer.public_key()]);
        let signature = signer.sign(b"checkpoint");
        assert_eq!(
            keys.verify(signer.key_id(), b"checkpoint", &signature),
            SignatureCheck::Valid
        );
        assert_eq!(
            keys.verify(signer.key_id(), b"checkpoinT", &signature),
            SignatureCheck::Invalid
        );
        assert_eq!(
            keys.verify(other.key_id(), b"checkpoint", &other.sign(b"checkpoint")),
            SignatureCheck::UnknownKey
        );
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let signer = AuditSigner::generate();
        let private = signer.private_pem().expect("pem");
        let public = signer.public_pem().expect("pem");
        let again = SigningKey::from_pkcs8_pem(&private).expect("private pem parses");
        assert_eq!(key_id(&again.verifying_key()), signer.key_id());
        let public = VerifyingKey::from_public_key_pem(&public).expect("public pem parses");
        assert_eq!(key_id(&public), signer.key_id());
    }
}

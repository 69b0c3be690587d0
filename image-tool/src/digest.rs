//! Content digests: parsing `sha256:<hex>` strictly and hashing while copying.
use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{Read, Write};

/// A validated `sha256:` digest; its hex part is safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            bail!("digest {s:?} is not a sha256 digest (only sha256 is supported)");
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            bail!("digest {s:?} is malformed: expected sha256: and 64 lowercase hex digits");
        }
        Ok(Digest(s.to_string()))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Copies `src` into `dst`, returning the digest and byte count of what was copied.
pub fn copy_hashing(mut src: impl Read, mut dst: impl Write) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((Digest(format!("sha256:{}", hex::encode(hasher.finalize()))), total))
}

//! The framing of the crate's own artifacts (LoRA adapters, training checkpoints): a magic
//! tag, a format version, a JSON header and length-prefixed binary sections.
//!
//! ```text
//! magic[4] | version u32 LE | header length u64 LE | header JSON | section count u32 LE |
//! (section length u64 LE | section bytes)*
//! ```
//!
//! Every field has one encoding, so equal contents give equal bytes and equal digests.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub(crate) const VERSION: u32 = 1;

pub(crate) fn write(magic: &[u8; 4], header: &impl Serialize, sections: &[&[u8]]) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(header)?;
    let total = 4 + 4 + 8 + header.len() + 4 + sections.iter().map(|section| 8 + section.len()).sum::<usize>();
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    let count = u32::try_from(sections.len()).map_err(|_| Error::InvalidConfig("too many sections".into()))?;
    bytes.extend_from_slice(&count.to_le_bytes());
    for section in sections {
        bytes.extend_from_slice(&(section.len() as u64).to_le_bytes());
        bytes.extend_from_slice(section);
    }
    debug_assert_eq!(bytes.len(), total);
    Ok(bytes)
}

pub(crate) fn read<'a, H: DeserializeOwned>(artifact: &'static str, magic: &[u8; 4], bytes: &'a [u8]) -> Result<(H, Vec<&'a [u8]>)> {
    let corrupt = |reason: &str| Error::Corrupt { artifact, reason: reason.to_string() };
    let mut cursor = Cursor { bytes, artifact };
    if cursor.take(4)? != magic {
        return Err(corrupt("wrong magic bytes"));
    }
    let version = u32::from_le_bytes(cursor.array()?);
    if version != VERSION {
        return Err(corrupt(&format!("unsupported format version {version}")));
    }
    let header_len = cursor.length()?;
    let header = serde_json::from_slice(cursor.take(header_len)?)?;
    let count = u32::from_le_bytes(cursor.array()?);
    let mut sections = Vec::new();
    for _ in 0..count {
        let len = cursor.length()?;
        sections.push(cursor.take(len)?);
    }
    if !cursor.bytes.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok((header, sections))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    artifact: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < len {
            return Err(Error::Corrupt { artifact: self.artifact, reason: "truncated".into() });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A u64 length prefix, checked against the bytes that remain.
    fn length(&mut self) -> Result<usize> {
        let len = u64::from_le_bytes(self.array()?);
        usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.bytes.len())
            .ok_or(Error::Corrupt { artifact: self.artifact, reason: "truncated".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_and_damage_is_detected() {
        let bytes = write(b"TEST", &vec![1, 2, 3], &[b"abc", b"", b"de"]).expect("writable");
        let (header, sections): (Vec<u32>, _) = read("test", b"TEST", &bytes).expect("readable");
        assert_eq!(header, vec![1, 2, 3]);
        assert_eq!(sections, vec![&b"abc"[..], b"", b"de"]);

        assert!(matches!(read::<Vec<u32>>("test", b"NOPE", &bytes), Err(Error::Corrupt { .. })));
        assert!(matches!(read::<Vec<u32>>("test", b"TEST", &bytes[..bytes.len() - 1]), Err(Error::Corrupt { .. })));
    }
}

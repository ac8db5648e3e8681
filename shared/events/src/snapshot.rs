//! A snapshot's manifest: the ordered entries of a Datanet's accepted contributions, one
//! canonical JSON line each. Each line's bytes are a Merkle leaf, so anyone holding the
//! manifest recomputes the root published in `SnapshotSealed`, and a contributor holding one
//! line and its audit path proves their contribution is in the snapshot.

use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};

/// One snapshot entry. Field order is the canonical serialisation: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub contribution_id: String,
    pub content_sha256: String,
    pub contributor_id: String,
    pub duplicate_cluster_id: String,
}

impl Entry {
    /// The entry's canonical line (compact JSON, fields in declaration order).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("an entry of strings always serialises")
    }

    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(self.line().as_bytes())
    }
}

/// The manifest bytes: one line per entry, each ending in a newline.
pub fn manifest(entries: &[Entry]) -> Vec<u8> {
    entries.iter().flat_map(|entry| format!("{}\n", entry.line()).into_bytes()).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest line {line} is not an entry: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("manifest line {line} is not in canonical form")]
    NotCanonical { line: usize },
    #[error("the manifest does not hash to the published root and entry count")]
    RootMismatch,
}

impl ManifestError {
    /// The stable error code services answer with.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::RootMismatch => "snapshot.root_mismatch",
            ManifestError::BadLine { .. } | ManifestError::NotCanonical { .. } => "snapshot.manifest_invalid",
        }
    }
}

/// A sealed snapshot's entries: its manifest parsed, and checked against the Merkle root (hex)
/// and entry count its `SnapshotSealed` published.
pub fn verified_entries(bytes: &[u8], merkle_root: &str, entry_count: u64) -> Result<Vec<Entry>, ManifestError> {
    let entries = parse_manifest(bytes)?;
    if hex::encode(root(&entries)) != merkle_root || entries.len() as u64 != entry_count {
        return Err(ManifestError::RootMismatch);
    }
    Ok(entries)
}

/// Parses a manifest, refusing anything that would not hash back to the same leaves.
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<Entry>, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|error| ManifestError::BadLine { line: 0, reason: error.to_string() })?;
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry: Entry = serde_json::from_str(line).map_err(|error| ManifestError::BadLine { line: index, reason: error.to_string() })?;
        if entry.line() != line {
            return Err(ManifestError::NotCanonical { line: index });
        }
        entries.push(entry);
    }
    Ok(entries)
}

pub fn root(entries: &[Entry]) -> Hash {
    merkle::root(&entries.iter().map(Entry::leaf_hash).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize) -> Entry {
        Entry {
            contribution_id: format!("c-{index}"),
            content_sha256: format!("{index:064x}"),
            contributor_id: format!("contributor-{}", index % 3),
            duplicate_cluster_id: format!("c-{}", index - index % 2),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_its_root_proves_each_entry() {
        let entries: Vec<Entry> = (0..7).map(entry).collect();
        let bytes = manifest(&entries);
        assert_eq!(parse_manifest(&bytes).expect("parses"), entries);
        let leaves: Vec<Hash> = entries.iter().map(Entry::leaf_hash).collect();
        let head = root(&entries);
        let proof = merkle::inclusion_proof(&leaves, 4).expect("in range");
        assert_eq!(merkle::verify_inclusion(&entries[4].leaf_hash(), 4, 7, &proof, &head), Ok(()));
    }

    #[test]
    fn a_manifest_is_verified_against_the_published_root_and_count() {
        let entries: Vec<Entry> = (0..5).map(entry).collect();
        let (bytes, published) = (manifest(&entries), hex::encode(root(&entries)));
        assert_eq!(verified_entries(&bytes, &published, 5), Ok(entries.clone()));
        assert_eq!(verified_entries(&bytes, &published, 4), Err(ManifestError::RootMismatch));
        assert_eq!(verified_entries(&manifest(&entries[..4]), &published, 4), Err(ManifestError::RootMismatch));
        assert_eq!(verified_entries(b"not json\n", &published, 1).map_err(|error| error.code()), Err("snapshot.manifest_invalid"));
    }

    #[test]
    fn a_reformatted_manifest_is_refused() {
        let spaced =
            b"{\"contribution_id\": \"c\", \"content_sha256\": \"h\", \"contributor_id\": \"a\", \"duplicate_cluster_id\": \"c\"}\n";
        assert_eq!(parse_manifest(spaced), Err(ManifestError::NotCanonical { line: 0 }));
    }
}

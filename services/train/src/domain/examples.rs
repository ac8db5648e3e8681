//! From pinned snapshots to training data: the examples (one per record of each accepted
//! contribution), their split into training and held-out sets, the token streams, and the
//! example table that ties every example to its contribution, contributor and duplicate
//! cluster (the table attribution and settlement later read).
//!
//! Pure: the worker fetches manifests and contents and hands them in. The same snapshots,
//! contents and seed always give the same streams and the same table bytes.

use std::collections::{BTreeSet, HashMap};

use model::Tokenizer;
use provenant_events::snapshot::Entry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a Datanet's contributions hold records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// The whole contribution is one record.
    PlainText,
    /// One JSON value per line; its string values, depth first, are the record's text.
    JsonLines,
}

/// Which set an example belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    HeldOut,
}

/// One row of the example table. Field order is the canonical serialisation: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// Position in the table, from 0.
    pub example: u64,
    pub snapshot_id: String,
    /// The Datanet the snapshot seals.
    pub datanet_id: String,
    pub contribution_id: String,
    pub contributor_id: String,
    pub duplicate_cluster_id: String,
    /// Record index within the contribution.
    pub record: u32,
    pub split: Split,
    /// Where the example's tokens start in its split's stream, and how many there are.
    pub token_offset: u64,
    pub token_count: u64,
}

/// One pinned snapshot's entries, as read from its verified manifest.
#[derive(Debug, Clone)]
pub struct SnapshotData {
    pub snapshot_id: String,
    pub datanet_id: String,
    pub format: RecordFormat,
    pub entries: Vec<Entry>,
}

/// The training and held-out token streams and the table that explains them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub train_tokens: Vec<u32>,
    pub held_out_tokens: Vec<u32>,
    pub examples: Vec<Example>,
}

impl Dataset {
    /// The example table: one canonical JSON line per example.
    pub fn table_bytes(&self) -> Vec<u8> {
        self.examples
            .iter()
            .flat_map(|example| {
                let mut line = serde_json::to_vec(example).expect("an example of strings and numbers always serialises");
                line.push(b'\n');
                line
            })
            .collect()
    }

    /// Contributors whose data the model trained on (held-out examples excluded).
    pub fn trained_contributors(&self) -> BTreeSet<&str> {
        self.examples.iter().filter(|example| example.split == Split::Train).map(|example| example.contributor_id.as_str()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("contribution {contribution_id} content {sha256} is not stored")]
    MissingContent { contribution_id: String, sha256: String },
    #[error("contribution {contribution_id} is not valid UTF-8")]
    NotUtf8 { contribution_id: String },
}

impl DataError {
    pub fn code(&self) -> &'static str {
        match self {
            DataError::MissingContent { .. } => "data.content_missing",
            DataError::NotUtf8 { .. } => "data.not_utf8",
        }
    }
}

/// Whether a duplicate cluster is held out: a seeded hash of the cluster id, so a record and
/// its near duplicates always land on the same side and held-out perplexity measures
/// generalisation rather than recall.
pub fn is_held_out(seed: u64, cluster_id: &str, held_out_ppm: u32) -> bool {
    let digest = Sha256::new().chain_update(seed.to_le_bytes()).chain_update(cluster_id.as_bytes()).finalize();
    let draw = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000;
    draw < u64::from(held_out_ppm)
}

/// The text records of one contribution.
pub fn records(format: RecordFormat, content: &str) -> Vec<String> {
    match format {
        RecordFormat::PlainText => vec![content.to_owned()],
        RecordFormat::JsonLines => content
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) => {
                    let mut text = String::new();
                    provenant_events::records::json_text(&value, &mut text);
                    text
                }
                // Validation accepted it, so this cannot happen for our own Datanets; train on
                // the raw line rather than lose it.
                Err(_) => line.to_owned(),
            })
            .collect(),
    }
}

/// Assembles the dataset. Snapshots are read in the order pinned and entries in manifest
/// order; a contribution in several pinned snapshots (a Datanet's snapshot N+1 extends N)
/// is one example set, credited to the first snapshot that holds it.
pub fn assemble(
    snapshots: &[SnapshotData],
    contents: &HashMap<String, Vec<u8>>,
    tokenizer: &Tokenizer,
    seed: u64,
    held_out_ppm: u32,
) -> Result<Dataset, DataError> {
    let mut dataset = Dataset { train_tokens: Vec::new(), held_out_tokens: Vec::new(), examples: Vec::new() };
    let mut seen = BTreeSet::new();
    for snapshot in snapshots {
        for entry in &snapshot.entries {
            if !seen.insert(entry.contribution_id.as_str()) {
                continue;
            }
            let bytes = contents.get(&entry.content_sha256).ok_or_else(|| DataError::MissingContent {
                contribution_id: entry.contribution_id.clone(),
                sha256: entry.content_sha256.clone(),
            })?;
            let text = std::str::from_utf8(bytes).map_err(|_| DataError::NotUtf8 { contribution_id: entry.contribution_id.clone() })?;
            let split = if is_held_out(seed, &entry.duplicate_cluster_id, held_out_ppm) { Split::HeldOut } else { Split::Train };
            for (record, text) in records(snapshot.format, text).into_iter().enumerate() {
                let tokens = tokenizer.encode_document(&text);
                let stream = match split {
                    Split::Train => &mut dataset.train_tokens,
                    Split::HeldOut => &mut dataset.held_out_tokens,
                };
                let example = Example {
                    example: dataset.examples.len() as u64,
                    snapshot_id: snapshot.snapshot_id.clone(),
                    datanet_id: snapshot.datanet_id.clone(),
                    contribution_id: entry.contribution_id.clone(),
                    contributor_id: entry.contributor_id.clone(),
                    duplicate_cluster_id: entry.duplicate_cluster_id.clone(),
                    record: u32::try_from(record).unwrap_or(u32::MAX),
                    split,
                    token_offset: stream.len() as u64,
                    token_count: tokens.len() as u64,
                };
                stream.extend(tokens);
                dataset.examples.push(example);
            }
        }
    }
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, cluster: usize) -> Entry {
        Entry {
            contribution_id: format!("c-{index}"),
            content_sha256: format!("{index:064x}"),
            contributor_id: format!("contributor-{}", index % 2),
            duplicate_cluster_id: format!("c-{cluster}"),
        }
    }

    fn contents(count: usize) -> HashMap<String, Vec<u8>> {
        (0..count).map(|index| (format!("{index:064x}"), format!("record number {index}").into_bytes())).collect()
    }

    #[test]
    fn overlapping_snapshots_give_each_contribution_once_and_duplicates_share_a_side() {
        let first = SnapshotData {
            snapshot_id: "d-1".into(),
            datanet_id: "d".into(),
            format: RecordFormat::PlainText,
            entries: (0..40).map(|i| entry(i, i / 2 * 2)).collect(),
        };
        let second = SnapshotData {
            snapshot_id: "d-2".into(),
            datanet_id: "d".into(),
            format: RecordFormat::PlainText,
            entries: (0..60).map(|i| entry(i, i / 2 * 2)).collect(),
        };
        let tokenizer = Tokenizer::byte_level();
        let dataset = assemble(&[first.clone(), second.clone()], &contents(60), &tokenizer, 3, 300_000).expect("assembles");
        assert_eq!(dataset.examples.len(), 60);
        assert_eq!(dataset.examples.iter().filter(|example| example.snapshot_id == "d-2").count(), 20);
        for pair in dataset.examples.chunks(2) {
            assert_eq!(pair[0].split, pair[1].split, "a duplicate cluster never straddles the split");
        }
        let held_out = dataset.examples.iter().filter(|example| example.split == Split::HeldOut).count();
        assert!(held_out > 0 && held_out < 60, "about 30% held out, got {held_out}");
        let again = assemble(&[first, second], &contents(60), &tokenizer, 3, 300_000).expect("assembles");
        assert_eq!(again.table_bytes(), dataset.table_bytes(), "assembly is deterministic");
        let example = &dataset.examples[5];
        let stream = if example.split == Split::Train { &dataset.train_tokens } else { &dataset.held_out_tokens };
        let tokens = &stream[example.token_offset as usize..(example.token_offset + example.token_count) as usize];
        assert_eq!(tokenizer.decode(tokens), "record number 5");
    }

    #[test]
    fn json_lines_records_are_their_string_values() {
        let content = "{\"text\": [\"hello\", \"world\"], \"n\": 3}\n\n{\"text\": \"bye\"}\n";
        assert_eq!(records(RecordFormat::JsonLines, content), ["hello world", "bye"]);
    }
}

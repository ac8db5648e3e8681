//! The example table of an index: which contribution, contributor, Datanet and duplicate cluster
//! every trained example (a row of the feature matrix) came from, where its tokens sit in the
//! training stream, and who owns each cluster.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One trained example. Field order is the canonical serialisation: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleRow {
    /// The example's number in the training job's example table.
    pub example: u64,
    pub contribution_id: String,
    pub contributor_id: String,
    pub duplicate_cluster_id: String,
    /// Where the example's tokens start in the training stream, and how many there are.
    pub token_offset: u64,
    pub token_count: u64,
    /// The Datanet whose snapshot held the contribution. Last, and left out when empty, so that
    /// tables written before it existed read back byte for byte.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub datanet_id: String,
}

/// Who is credited for a cluster: its founding contributor, in the Datanet of the founding
/// contribution. A contributor with records in two Datanets is two owners, so that settlement
/// can total what each Datanet earned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub contributor_id: String,
    pub datanet_id: String,
}

/// The rows, with every cluster's owner resolved.
#[derive(Debug, Clone)]
pub struct ExampleTable {
    rows: Vec<ExampleRow>,
    /// Per row: the index of its cluster's owner in `owners`.
    owner_of_row: Vec<usize>,
    owners: Vec<Owner>,
    /// Per row: the index of its cluster in `clusters`.
    cluster_of_row: Vec<usize>,
    clusters: Vec<String>,
}

impl ExampleTable {
    /// Resolves cluster owners: a duplicate cluster belongs to its earliest submitter, the
    /// contributor of the contribution that founded it (validation names a cluster after its
    /// first contribution); a cluster whose founder is not in the table falls to the first row
    /// that holds it. A duplicate therefore never creates a new owner.
    pub fn new(rows: Vec<ExampleRow>) -> Result<Self, Error> {
        if rows.windows(2).any(|pair| pair[1].token_offset < pair[0].token_offset + pair[0].token_count) {
            return Err(Error::Shape("example rows must be in stream order without overlaps".into()));
        }
        let founders: HashMap<&str, &ExampleRow> = rows.iter().map(|row| (row.contribution_id.as_str(), row)).collect();
        let mut cluster_index: HashMap<&str, usize> = HashMap::new();
        let mut clusters = Vec::new();
        let mut cluster_owner = Vec::new();
        let mut owner_index: HashMap<Owner, usize> = HashMap::new();
        let mut owners = Vec::new();
        let mut cluster_of_row = Vec::with_capacity(rows.len());
        for row in &rows {
            let cluster = *cluster_index.entry(row.duplicate_cluster_id.as_str()).or_insert_with(|| {
                let founder = founders.get(row.duplicate_cluster_id.as_str()).copied().unwrap_or(row);
                let owner = Owner { contributor_id: founder.contributor_id.clone(), datanet_id: founder.datanet_id.clone() };
                let next = owners.len();
                let owner = *owner_index.entry(owner).or_insert_with_key(|owner| {
                    owners.push(owner.clone());
                    next
                });
                clusters.push(row.duplicate_cluster_id.clone());
                cluster_owner.push(owner);
                clusters.len() - 1
            });
            cluster_of_row.push(cluster);
        }
        let owner_of_row = cluster_of_row.iter().map(|&cluster| cluster_owner[cluster]).collect();
        Ok(Self { rows, owner_of_row, owners, cluster_of_row, clusters })
    }

    /// One canonical JSON line per row.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for row in &self.rows {
            bytes.extend(serde_json::to_vec(row).expect("strings and numbers always serialise"));
            bytes.push(b'\n');
        }
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let rows = bytes
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line).map_err(|error| Error::Corrupt { artifact: "example table", reason: error.to_string() })
            })
            .collect::<Result<Vec<ExampleRow>, Error>>()?;
        Self::new(rows)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn row(&self, index: usize) -> &ExampleRow {
        &self.rows[index]
    }

    /// The owner of row `index`'s cluster, as an index into [`owners`](Self::owners).
    pub fn owner_of(&self, index: usize) -> usize {
        self.owner_of_row[index]
    }

    pub fn owners(&self) -> &[Owner] {
        &self.owners
    }

    pub fn cluster_of(&self, index: usize) -> usize {
        self.cluster_of_row[index]
    }

    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// The row whose tokens hold stream position `position`, if any.
    pub fn row_at(&self, position: u64) -> Option<usize> {
        let index = self.rows.partition_point(|row| row.token_offset <= position).checked_sub(1)?;
        let row = &self.rows[index];
        (position < row.token_offset + row.token_count).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(example: u64, contribution: &str, contributor: &str, cluster: &str, offset: u64) -> ExampleRow {
        ExampleRow {
            example,
            contribution_id: contribution.into(),
            contributor_id: contributor.into(),
            duplicate_cluster_id: cluster.into(),
            token_offset: offset,
            token_count: 10,
            datanet_id: String::new(),
        }
    }

    #[test]
    fn a_cluster_belongs_to_the_contributor_who_founded_it() {
        let table = ExampleTable::new(vec![
            // The copy comes first in the stream, but the cluster is named after alice's original.
            row(0, "copy", "mallory", "original", 0),
            row(1, "original", "alice", "original", 10),
            row(2, "lonely", "bob", "lonely", 20),
            row(3, "orphan", "carol", "gone", 30),
        ])
        .expect("valid");
        let owner = |index| table.owners()[table.owner_of(index)].contributor_id.as_str();
        assert_eq!([owner(0), owner(1), owner(2), owner(3)], ["alice", "alice", "bob", "carol"]);
        assert_eq!(table.cluster_count(), 3);
        assert_eq!(table.row_at(15), Some(1));
        assert_eq!(table.row_at(40), None);
        let again = ExampleTable::from_bytes(&table.to_bytes()).expect("reads");
        assert_eq!(again.to_bytes(), table.to_bytes());
        assert!(ExampleTable::new(vec![row(0, "a", "a", "a", 5), row(1, "b", "b", "b", 0)]).is_err());
    }

    #[test]
    fn a_contributor_in_two_datanets_is_two_owners_and_a_copy_credits_the_founders_datanet() {
        let in_datanet = |mut row: ExampleRow, datanet: &str| {
            row.datanet_id = datanet.into();
            row
        };
        let table = ExampleTable::new(vec![
            in_datanet(row(0, "de-1", "ann", "de-1", 0), "de"),
            in_datanet(row(1, "es-1", "ann", "es-1", 10), "es"),
            // bob copied ann's German record into the Spanish Datanet: ann's, and the German one's.
            in_datanet(row(2, "es-2", "bob", "de-1", 20), "es"),
        ])
        .expect("valid");
        let owner = |index| {
            let owner = &table.owners()[table.owner_of(index)];
            (owner.contributor_id.as_str(), owner.datanet_id.as_str())
        };
        assert_eq!([owner(0), owner(1), owner(2)], [("ann", "de"), ("ann", "es"), ("ann", "de")]);
        assert_eq!(table.owners().len(), 2);
        let bytes = table.to_bytes();
        assert!(
            String::from_utf8_lossy(&bytes)
                .lines()
                .all(|line| line.ends_with(r#""datanet_id":"de"}"#) || line.ends_with(r#""datanet_id":"es"}"#))
        );
        // A table without Datanets serialises as before the field existed.
        assert!(
            !String::from_utf8_lossy(&ExampleTable::new(vec![row(0, "a", "a", "a", 0)]).expect("valid").to_bytes()).contains("datanet")
        );
    }
}

//! What one batch of the contribution validator knows about accepted contributions, so that
//! judging a submission costs no statement of its own:
//! - the stored contributions its submissions could duplicate, read for the whole batch in
//!   `prepare` (by content hash and by LSH band key), and
//! - the contributions the batch accepted itself, written together at its end (`flush`).
//!
//! A submission is judged against both, exactly as if every earlier verdict of the batch had
//! been written before it. A lookup whose keys were not read (content `prepare` could not
//! fetch, an approved held submission, every event of a batch retried one by one) reads them
//! from the database then, and keeps them: the store holds whatever the batch wrote before, and
//! what the batch accepts after is added here.

use std::collections::{HashMap, HashSet};

use provenant_bus::Deferred;
use sea_orm::{ConnectionTrait, DbErr};

use crate::domain::near_duplicates::Signature;
use crate::projections::accepted::{self, Model};

/// (Datanet, content SHA-256).
type ContentKey = (String, String);
/// (Datanet, LSH band key).
type BandKey = (String, u64);

#[derive(Debug, Default)]
pub(crate) struct KnownAccepted {
    /// Every contribution known, stored or accepted by the batch, by contribution id.
    rows: HashMap<String, (Model, Option<Signature>)>,
    by_content: HashMap<ContentKey, Vec<String>>,
    by_band: HashMap<BandKey, Vec<String>>,
    /// The keys whose stored contributions have been read: all of them are in `rows`.
    read_contents: HashSet<ContentKey>,
    read_bands: HashSet<BandKey>,
    /// Accepted by the batch and not yet written, in the order accepted.
    unwritten: Vec<Model>,
}

impl KnownAccepted {
    /// Records that every stored contribution under `contents` and `bands` is among `stored`.
    pub(crate) fn read(
        &mut self,
        contents: impl IntoIterator<Item = ContentKey>,
        bands: impl IntoIterator<Item = BandKey>,
        stored: Vec<Model>,
    ) {
        self.read_contents.extend(contents);
        self.read_bands.extend(bands);
        for row in stored {
            self.know(row);
        }
    }

    /// Keeps `row` (its signature in its column), accepted by the batch, for lookups and for
    /// the end of the batch.
    pub(crate) fn accept(&mut self, row: Model) {
        self.unwritten.push(row.clone());
        self.know(row);
    }

    /// The accepted contributions not yet written, leaving none.
    pub(crate) fn take_unwritten(&mut self) -> Vec<Model> {
        std::mem::take(&mut self.unwritten)
    }

    fn know(&mut self, row: Model) {
        if self.rows.contains_key(&row.contribution_id) {
            // Read back after the batch wrote it: the same row.
            return;
        }
        let signature = accepted::signature_of(&row);
        let id = row.contribution_id.clone();
        self.by_content.entry((row.datanet_id.clone(), row.content_sha256.clone())).or_default().push(id.clone());
        for key in signature.iter().flat_map(Signature::band_keys) {
            self.by_band.entry((row.datanet_id.clone(), key)).or_default().push(id.clone());
        }
        self.rows.insert(id, (row, signature));
    }

    fn earliest_with_content(&self, key: &ContentKey) -> Option<Model> {
        let ids = self.by_content.get(key)?;
        // Contribution ids are time-ordered (UUIDv7): the least is the earliest submitted.
        ids.iter().filter_map(|id| self.rows.get(id)).map(|(row, _)| row).min_by(|a, b| a.contribution_id.cmp(&b.contribution_id)).cloned()
    }

    fn sharing_bands(&self, datanet_id: &str, band_keys: &[u64]) -> Vec<(Model, Signature)> {
        let mut ids: Vec<&String> = band_keys.iter().filter_map(|key| self.by_band.get(&(datanet_id.to_owned(), *key))).flatten().collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let (row, signature) = self.rows.get(id)?;
                Some((row.clone(), signature.clone()?))
            })
            .collect()
    }
}

/// The earliest accepted contribution with exactly this content in the Datanet.
pub(crate) async fn earliest_with_content(
    known: &Deferred<KnownAccepted>,
    database: &impl ConnectionTrait,
    datanet_id: &str,
    content_sha256: &str,
) -> Result<Option<Model>, DbErr> {
    let key = (datanet_id.to_owned(), content_sha256.to_owned());
    if !known.with(|known| known.read_contents.contains(&key)) {
        let stored = accepted::with_contents(database, std::slice::from_ref(&key.0), std::slice::from_ref(&key.1)).await?;
        known.with(|known| known.read([key.clone()], [], stored));
    }
    Ok(known.with(|known| known.earliest_with_content(&key)))
}

/// Accepted contributions of the Datanet sharing at least one of `band_keys`, with their
/// signatures, ordered by contribution id (oldest first).
pub(crate) async fn near_duplicate_candidates(
    known: &Deferred<KnownAccepted>,
    database: &impl ConnectionTrait,
    datanet_id: &str,
    band_keys: &[u64],
) -> Result<Vec<(Model, Signature)>, DbErr> {
    let unread: Vec<u64> =
        known.with(|known| band_keys.iter().copied().filter(|key| !known.read_bands.contains(&(datanet_id.to_owned(), *key))).collect());
    if !unread.is_empty() {
        let stored = accepted::sharing_bands(database, &[datanet_id.to_owned()], &unread).await?;
        known.with(|known| known.read([], unread.iter().map(|key| (datanet_id.to_owned(), *key)), stored));
    }
    Ok(known.with(|known| known.sharing_bands(datanet_id, band_keys)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, content: &str, text: &str) -> Model {
        let signature = Signature::of(text);
        let row = Model {
            contribution_id: id.into(),
            datanet_id: "d".into(),
            contributor_id: format!("contributor of {id}"),
            content_sha256: content.into(),
            cluster_id: id.into(),
            signature: None,
            accepted_sequence: 1,
        };
        accepted::with_signature(row, signature.as_ref())
    }

    #[test]
    fn the_batch_sees_its_own_acceptances_beside_what_was_stored() {
        let text = "the quick brown fox jumps over the lazy dog near the quiet river bank";
        let signature = Signature::of(text).expect("words");
        let keys: Vec<u64> = signature.band_keys().collect();
        let mut known = KnownAccepted::default();
        let read_keys = keys.iter().map(|key| ("d".to_owned(), *key));
        known.read([("d".to_owned(), "h".to_owned())], read_keys, vec![row("b-stored", "h", text)]);
        known.accept(row("a-accepted", "h", text));
        known.accept(row("c-other", "other", "nothing in common with the rest of these words at all"));

        let earliest = known.earliest_with_content(&("d".to_owned(), "h".to_owned())).expect("two with that content");
        assert_eq!(earliest.contribution_id, "a-accepted");
        let candidates: Vec<String> = known.sharing_bands("d", &keys).into_iter().map(|(row, _)| row.contribution_id).collect();
        assert_eq!(candidates, ["a-accepted", "b-stored"]);
        assert!(known.sharing_bands("another datanet", &keys).is_empty());

        let unwritten: Vec<String> = known.take_unwritten().into_iter().map(|row| row.contribution_id).collect();
        assert_eq!(unwritten, ["a-accepted", "c-other"]);
        assert!(known.take_unwritten().is_empty());
        // Read back after being written, a row is known once.
        known.read([], [], vec![row("a-accepted", "h", text)]);
        assert_eq!(known.sharing_bands("d", &keys).len(), 2);
    }
}

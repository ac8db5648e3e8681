//! RFC 6962 (Certificate Transparency) Merkle trees over a snapshot's ordered entries.
//!
//! Leaves hash as `SHA-256(0x00 || entry)`, interior nodes as `SHA-256(0x01 || left || right)`;
//! a tree of `n` leaves splits at the largest power of two below `n`, so odd nodes are carried
//! up rather than duplicated (no CVE-2012-2459 style second preimages). An inclusion proof lets
//! a contributor show that their record is entry `i` of a snapshot whose root was published in
//! `SnapshotSealed`, without the other entries.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree head of `leaves` (already leaf-hashed). The empty tree's head is SHA-256 of
/// nothing.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("entry {index} is outside a tree of {size} entries")]
    OutOfRange { index: usize, size: usize },
    #[error("the proof has {actual} hashes; a tree of this size needs {expected}")]
    WrongLength { expected: usize, actual: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// The audit path of entry `index`: sibling hashes from the leaf up (RFC 6962, section 2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Result<Vec<Hash>, ProofError> {
    if index >= leaves.len() {
        return Err(ProofError::OutOfRange { index, size: leaves.len() });
    }
    let mut path = Vec::new();
    collect_path(leaves, index, &mut path);
    Ok(path)
}

fn collect_path(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    if index < k {
        collect_path(&leaves[..k], index, path);
        path.push(root(&leaves[k..]));
    } else {
        collect_path(&leaves[k..], index - k, path);
        path.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` is entry `index` of a tree of `size` entries with head `expected_root`
/// (the iterative verification of RFC 9162, section 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: usize, size: usize, proof: &[Hash], expected_root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut node_index, mut last_index) = (index, size - 1);
    let mut hash = *leaf;
    let mut used = 0;
    for sibling in proof {
        if last_index == 0 {
            return Err(ProofError::WrongLength { expected: used, actual: proof.len() });
        }
        if node_index % 2 == 1 || node_index == last_index {
            hash = node_hash(sibling, &hash);
            // A right-most node without a right sibling rises until it is a right child.
            if node_index % 2 == 0 {
                while node_index % 2 == 0 && node_index != 0 {
                    node_index /= 2;
                    last_index /= 2;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        node_index /= 2;
        last_index /= 2;
        used += 1;
    }
    if last_index != 0 {
        return Err(ProofError::WrongLength { expected: used + 1, actual: proof.len() });
    }
    if &hash == expected_root { Ok(()) } else { Err(ProofError::RootMismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Hash {
        hex::decode(text).expect("hex").try_into().expect("32 bytes")
    }

    /// The Certificate Transparency reference inputs and tree heads (RFC 6962 test data).
    const ENTRIES: [&str; 8] = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_leaves() -> Vec<Hash> {
        ENTRIES.iter().map(|entry| leaf_hash(&hex::decode(entry).expect("hex"))).collect()
    }

    #[test]
    fn tree_heads_match_the_rfc_6962_reference_for_every_size() {
        let leaves = reference_leaves();
        for size in 0..=8 {
            assert_eq!(hex::encode(root(&leaves[..size])), ROOTS[size], "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference_paths() {
        let leaves = reference_leaves();
        let path = inclusion_proof(&leaves, 0).expect("in range");
        let expected = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(path, expected.map(unhex));
        let path = inclusion_proof(&leaves, 5).expect("in range");
        let expected = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(path, expected.map(unhex));
    }

    #[test]
    fn every_proof_verifies_in_every_tree_shape_and_tampering_never_does() {
        for size in 1..=40usize {
            let leaves: Vec<Hash> = (0..size).map(|index| leaf_hash(format!("record {index}").as_bytes())).collect();
            let head = root(&leaves);
            for index in 0..size {
                let proof = inclusion_proof(&leaves, index).expect("in range");
                assert_eq!(verify_inclusion(&leaves[index], index, size, &proof, &head), Ok(()), "size {size} index {index}");
                let other = leaf_hash(b"not in the tree");
                assert!(verify_inclusion(&other, index, size, &proof, &head).is_err());
                if size > 1 {
                    assert!(verify_inclusion(&leaves[index], (index + 1) % size, size, &proof, &head).is_err());
                    let mut bent = proof.clone();
                    bent[0][0] ^= 1;
                    assert!(verify_inclusion(&leaves[index], index, size, &bent, &head).is_err());
                    assert!(verify_inclusion(&leaves[index], index, size, &proof[..proof.len() - 1], &head).is_err());
                }
            }
            assert_eq!(inclusion_proof(&leaves, size), Err(ProofError::OutOfRange { index: size, size }));
        }
    }
}

//! Damped per-block Fisher preconditioning (TRAK-style): a training example's stored feature is
//! `(F_b + λ_b I)⁻¹ φ_b` for every block `b` of its feature vector, where `F_b = Φ_bᵀ Φ_b / N` is
//! the empirical Fisher of that block over the training set and `λ_b` is `damping` times the
//! mean of `F_b`'s diagonal. A query's raw feature dotted with a stored feature is then the
//! influence score `φ_qᵀ (F + λ I)⁻¹ φ_i`, computed with one matrix–vector product per query.
//!
//! Blocks are the per-layer sketches: preconditioning each layer apart (block-diagonal Fisher)
//! keeps the solve small and stops one layer's scale from drowning the others.

use std::ops::Range;

use crate::Error;

/// Cholesky factors of the damped Fisher of every block.
pub struct Preconditioner {
    blocks: Vec<(Range<usize>, Vec<f64>)>,
}

impl Preconditioner {
    /// Fits the damped Fisher of every block over `rows` (row-major, `dim` wide).
    pub fn fit(rows: &[f32], dim: usize, blocks: &[Range<usize>], damping: f64) -> Result<Self, Error> {
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!("{} values do not make rows of {dim}", rows.len())));
        }
        if !(damping > 0.0 && damping.is_finite()) {
            return Err(Error::Shape(format!("damping must be positive, not {damping}")));
        }
        let count = rows.len() / dim;
        let mut fitted = Vec::with_capacity(blocks.len());
        for block in blocks {
            if block.end > dim || block.is_empty() {
                return Err(Error::Shape(format!("block {block:?} does not fit in {dim} features")));
            }
            let width = block.len();
            let mut fisher = vec![0.0f64; width * width];
            for row in rows.chunks_exact(dim) {
                let part = &row[block.clone()];
                for (i, &left) in part.iter().enumerate() {
                    let left = f64::from(left);
                    for (j, &right) in part[..=i].iter().enumerate() {
                        fisher[i * width + j] += left * f64::from(right);
                    }
                }
            }
            let scale = 1.0 / count.max(1) as f64;
            let trace: f64 = (0..width).map(|i| fisher[i * width + i] * scale).sum();
            // An all-zero block (a layer the loss never reached) still gets a usable solve.
            let lambda = (damping * trace / width as f64).max(f64::MIN_POSITIVE);
            for i in 0..width {
                for j in 0..=i {
                    fisher[i * width + j] *= scale;
                }
                fisher[i * width + i] += lambda;
            }
            cholesky_in_place(&mut fisher, width)?;
            fitted.push((block.clone(), fisher));
        }
        Ok(Self { blocks: fitted })
    }

    /// Replaces `row` by `(F + λ I)⁻¹ row`, block by block.
    pub fn apply(&self, row: &mut [f32]) {
        for (block, factor) in &self.blocks {
            let part = &mut row[block.clone()];
            let mut values: Vec<f64> = part.iter().map(|&value| f64::from(value)).collect();
            solve_in_place(factor, block.len(), &mut values);
            for (slot, value) in part.iter_mut().zip(values) {
                *slot = value as f32;
            }
        }
    }
}

/// Lower Cholesky factor of a symmetric positive definite matrix (lower triangle given).
fn cholesky_in_place(matrix: &mut [f64], width: usize) -> Result<(), Error> {
    for j in 0..width {
        let mut diagonal = matrix[j * width + j];
        for k in 0..j {
            diagonal -= matrix[j * width + k] * matrix[j * width + k];
        }
        if diagonal <= 0.0 || !diagonal.is_finite() {
            return Err(Error::Shape("the damped Fisher is not positive definite (non-finite features?)".into()));
        }
        let pivot = diagonal.sqrt();
        matrix[j * width + j] = pivot;
        for i in j + 1..width {
            let mut value = matrix[i * width + j];
            for k in 0..j {
                value -= matrix[i * width + k] * matrix[j * width + k];
            }
            matrix[i * width + j] = value / pivot;
        }
    }
    Ok(())
}

/// Solves `L Lᵀ x = b` in place.
fn solve_in_place(factor: &[f64], width: usize, values: &mut [f64]) {
    for i in 0..width {
        let mut value = values[i];
        for k in 0..i {
            value -= factor[i * width + k] * values[k];
        }
        values[i] = value / factor[i * width + i];
    }
    for i in (0..width).rev() {
        let mut value = values[i];
        for k in i + 1..width {
            value -= factor[k * width + i] * values[k];
        }
        values[i] = value / factor[i * width + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applying_the_preconditioner_then_the_damped_fisher_gives_the_row_back() {
        // Three rows, two blocks of two.
        let rows = [1.0f32, 2.0, 0.5, -1.0, 0.0, 1.0, 2.0, 2.0, -1.0, 0.5, 1.0, 0.0];
        let damping = 0.1;
        let preconditioner = Preconditioner::fit(&rows, 4, &[0..2, 2..4], damping).expect("fits");
        let mut row = [0.3f32, -0.7, 1.1, 0.2];
        let original = row;
        preconditioner.apply(&mut row);
        for block in [0..2usize, 2..4] {
            // Rebuild F + λI for the block and multiply.
            let width = block.len();
            let mut fisher = vec![0.0f64; width * width];
            for sample in rows.chunks_exact(4) {
                for i in 0..width {
                    for j in 0..width {
                        fisher[i * width + j] += f64::from(sample[block.start + i]) * f64::from(sample[block.start + j]) / 3.0;
                    }
                }
            }
            let trace: f64 = (0..width).map(|i| fisher[i * width + i]).sum();
            for i in 0..width {
                fisher[i * width + i] += damping * trace / width as f64;
            }
            for i in 0..width {
                let product: f64 = (0..width).map(|j| fisher[i * width + j] * f64::from(row[block.start + j])).sum();
                assert!((product - f64::from(original[block.start + i])).abs() < 1e-5, "block {block:?} row {i}: {product}");
            }
        }
    }

    #[test]
    fn zero_blocks_and_bad_shapes() {
        let whole = std::slice::from_ref(&(0..4));
        let preconditioner = Preconditioner::fit(&[0.0; 8], 4, whole, 0.1).expect("an all-zero block still fits");
        let mut row = [0.0f32; 4];
        preconditioner.apply(&mut row);
        assert_eq!(row, [0.0; 4]);
        assert!(Preconditioner::fit(&[0.0; 7], 4, whole, 0.1).is_err());
        assert!(Preconditioner::fit(&[0.0; 8], 4, std::slice::from_ref(&(0..5)), 0.1).is_err());
        assert!(Preconditioner::fit(&[f32::NAN; 8], 4, whole, 0.1).is_err());
    }
}

//! The sparse CPU step against the dense fused step, bit for bit, over many
//! shapes: every class count the sparse step handles, feature counts on
//! both sides of multiples of 8, partial 64-row blocks, shuffled partial
//! batches, all-zero and all-255 rows, and random starting weights.

use wgpu_learn::cpu::fused::{self, FusedParams};
use wgpu_learn::cpu::sparse::{SparseRows, SparseTrainer, MAX_CLASSES};

/// A linear congruential generator, so that the cases are reproducible.
struct Lcg(u32);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0 >> 8
    }
}

/// Byte rows where every seventh row from row 3 is all zero, every seventh
/// from row 5 all 255, and about `zero_percent` of the other bytes are 0.
fn byte_rows(rows: usize, d: usize, zero_percent: u32, rng: &mut Lcg) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * d);
    for r in 0..rows {
        for _ in 0..d {
            let draw = rng.next();
            out.push(match r % 7 {
                3 => 0,
                5 => 255,
                _ if draw % 100 < zero_percent => 0,
                _ => (draw / 100 % 255 + 1) as u8,
            });
        }
    }
    out
}

#[test]
fn sparse_step_matches_dense_over_shapes() {
    let mut rng = Lcg(11);
    let mut cases = 0;
    for k in 1..=MAX_CLASSES {
        for d in [1, 7, 8, 9, 15, 16, 17, 33, 100] {
            for rows in [1, 63, 64, 65, 130] {
                let zero_percent = [0, 50, 90, 100][cases % 4];
                cases += 1;
                let x = byte_rows(rows, d, zero_percent, &mut rng);
                let labels: Vec<u32> = (0..rows).map(|_| rng.next() % k as u32).collect();
                let sparse = SparseRows::from_bytes(&x, d);
                let mut dense = FusedParams::zeros(d, k);
                for w in dense.wt.iter_mut().chain(dense.bias.iter_mut()) {
                    *w = (rng.next() % 2001) as f32 / 1000.0 - 1.0;
                }
                let mut trainer = SparseTrainer::new(&dense).unwrap();
                assert_eq!(trainer.params(), dense);

                // Three steps on shrinking, freshly shuffled batches.
                let mut order: Vec<u32> = (0..rows as u32).collect();
                for step in 0..3 {
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.next() as usize % (i + 1));
                    }
                    let picked = &order[..rows.div_ceil(step + 1)];
                    let batch_x: Vec<u8> = picked
                        .iter()
                        .flat_map(|&r| x[r as usize * d..(r as usize + 1) * d].iter().copied())
                        .collect();
                    let batch_labels: Vec<u32> =
                        picked.iter().map(|&r| labels[r as usize]).collect();
                    let dense_loss = fused::sgd_step(&mut dense, &batch_x, &batch_labels, 0.7);
                    let sparse_loss = trainer.step(&sparse, picked, &labels, 0.7);
                    let case =
                        format!("k {k}, d {d}, rows {rows}, zeros {zero_percent} %, step {step}");
                    assert_eq!(dense_loss.to_bits(), sparse_loss.to_bits(), "{case}: loss");
                    assert_eq!(trainer.params(), dense, "{case}: parameters");
                }

                for start in [0, rows / 3] {
                    assert_eq!(
                        trainer.count_errors(&sparse, start..rows, &labels),
                        fused::count_errors(&dense, &x[start * d..], &labels[start..]),
                        "k {k}, d {d}, rows {rows}: errors from row {start}"
                    );
                }
            }
        }
    }
    assert_eq!(cases, MAX_CLASSES * 9 * 5);
}

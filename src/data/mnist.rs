//! The classic MNIST splits from IDX files or the pickle.
//! TEMPORARY STUB, replaced by the data branch.
#![allow(missing_docs)]
use crate::data::{Dataset, Splits};
use crate::error::Result;
use std::io::Read;
use std::path::Path;

fn read(path: &Path) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut raw).unwrap();
    raw
}

pub fn load_idx_dir(dir: &Path, _validation_size: Option<usize>) -> Result<Splits> {
    let images = read(&dir.join("train-images-idx3-ubyte.gz"));
    let labels = read(&dir.join("train-labels-idx1-ubyte.gz"));
    let timages = read(&dir.join("t10k-images-idx3-ubyte.gz"));
    let tlabels = read(&dir.join("t10k-labels-idx1-ubyte.gz"));
    let f = |b: &[u8]| b.iter().map(|&v| v as f32 / 256.0).collect::<Vec<f32>>();
    let l = |b: &[u8]| b.iter().map(|&v| v as u32).collect::<Vec<u32>>();
    let train = Dataset::new("train", f(&images[16..]), l(&labels[8..]), vec![28, 28], 10)?;
    let test = Dataset::new("test", f(&timages[16..]), l(&tlabels[8..]), vec![28, 28], 10)?;
    let (train, validation) = train.split_last(10000);
    Splits::new(train, validation, test)
}

pub fn load_pickle(_path: &Path) -> Result<Splits> {
    unimplemented!()
}

//! Reader for the IDX format of MNIST and Fashion-MNIST.
//!
//! An IDX file starts with a big-endian header: two zero bytes, a type byte,
//! a dimension count byte, then one u32 per dimension. The data follows, row
//! by row, with no padding. This reader supports the unsigned-byte type
//! (0x08), which is what MNIST and Fashion-MNIST use: images have the magic
//! number 0x00000803 (or any other count of at least two dimensions) and
//! labels 0x00000801.
//!
//! Files may be gzip-compressed. Compression is detected from the first two
//! bytes (1F 8B), never from the file name. The data length that the header
//! promises is checked against the file before the data buffer is
//! allocated, so a corrupt header cannot make the reader allocate more
//! memory than the file contains.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Cursor, ErrorKind, Read};
use std::path::Path;

/// The two bytes that start every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

/// The IDX type byte for unsigned bytes, the only type this reader supports.
const TYPE_U8: u8 = 0x08;

/// A parsed IDX file of unsigned bytes: its dimensions and its data in
/// row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first, for example
    /// `[60000, 28, 28]` for the MNIST training images.
    pub dims: Vec<usize>,
    /// The data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Images read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Pixels of all images, row-major, `count * sample_shape.iter().product()` bytes.
    pub bytes: Vec<u8>,
    /// Number of images.
    pub count: usize,
    /// Shape of one image, for example `[28, 28]`.
    pub sample_shape: Vec<usize>,
}

impl IdxArray {
    /// Interprets the array as images: the first dimension counts the images
    /// and the remaining ones give the shape of each image.
    ///
    /// # Errors
    /// [`Error::Idx`] naming `path` if the array has a single dimension
    /// (a labels file) or an image dimension is zero.
    pub fn into_images(self, path: &Path) -> Result<IdxImages> {
        if self.dims.len() < 2 {
            return Err(idx_error(
                path,
                "this looks like a labels file (1 dimension); pass it as labels, or pass an \
                 images file with at least 2 dimensions here"
                    .to_string(),
            ));
        }
        let sample_shape = self.dims[1..].to_vec();
        if sample_shape.contains(&0) {
            return Err(idx_error(
                path,
                format!("image shape {sample_shape:?} has a zero dimension"),
            ));
        }
        Ok(IdxImages {
            bytes: self.data,
            count: self.dims[0],
            sample_shape,
        })
    }

    /// Interprets the array as labels, one byte per sample.
    ///
    /// # Errors
    /// [`Error::Idx`] naming `path` if the array has more than one dimension
    /// (an images file).
    pub fn into_labels(self, path: &Path) -> Result<Vec<u8>> {
        if self.dims.len() != 1 {
            return Err(idx_error(
                path,
                format!(
                    "this looks like an images file ({} dimensions); pass it as images, or pass \
                     a labels file with 1 dimension here",
                    self.dims.len()
                ),
            ));
        }
        Ok(self.data)
    }
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read, or is a directory.
/// [`Error::Idx`] if the file is empty, shorter than its header, truncated,
/// followed by extra bytes, a broken gzip stream, or of a type other than
/// unsigned bytes (0x08).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io("reading", path, e))?;
    if metadata.is_dir() {
        return Err(Error::io(
            "reading",
            path,
            std::io::Error::new(
                ErrorKind::IsADirectory,
                "this is a directory; expected an IDX file",
            ),
        ));
    }
    parse_stream(BufReader::new(file), metadata.len(), path)
}

/// Parses an IDX file held in memory, raw or gzip-compressed.
///
/// `path` only names the data in error messages.
///
/// # Errors
/// [`Error::Idx`] for the same malformed inputs as [`read_idx`].
pub fn parse_idx(bytes: &[u8], path: impl AsRef<Path>) -> Result<IdxArray> {
    parse_stream(Cursor::new(bytes), bytes.len() as u64, path.as_ref())
}

/// Reads an IDX images file: the first dimension counts the images, the
/// rest give the image shape.
///
/// # Errors
/// As [`read_idx`], and [`Error::Idx`] if the file has one dimension (a
/// labels file).
pub fn read_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    read_idx(path)?.into_images(path)
}

/// Reads an IDX labels file of one byte per sample.
///
/// # Errors
/// As [`read_idx`], and [`Error::Idx`] if the file has more than one
/// dimension (an images file).
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    read_idx(path)?.into_labels(path)
}

fn idx_error(path: &Path, reason: String) -> Error {
    Error::Idx {
        path: path.to_path_buf(),
        reason,
    }
}

/// Parses an IDX stream whose stored (possibly compressed) length is `stored_len` bytes.
fn parse_stream<R: Read>(mut reader: R, stored_len: u64, path: &Path) -> Result<IdxArray> {
    if stored_len == 0 {
        return Err(idx_error(path, "the file is empty".to_string()));
    }
    let mut start = [0u8; 2];
    read_header_bytes(&mut reader, &mut start, path, "reading")?;
    let reader = Cursor::new(start).chain(reader);
    if start == GZIP_MAGIC {
        let mut decoder = MultiGzDecoder::new(reader);
        let dims = read_header(&mut decoder, path, true)?;
        let data = read_gzip_data(decoder, &dims, path)?;
        Ok(IdxArray { dims, data })
    } else {
        let mut reader = reader;
        let dims = read_header(&mut reader, path, false)?;
        let header_len = header_len(dims.len());
        let data = read_raw_data(reader, stored_len.saturating_sub(header_len), &dims, path)?;
        Ok(IdxArray { dims, data })
    }
}

fn header_len(dim_count: usize) -> u64 {
    4 + 4 * dim_count as u64
}

/// Fills `buffer` from the header. An early end means that the file is
/// shorter than its header.
fn read_header_bytes<R: Read>(
    reader: &mut R,
    buffer: &mut [u8],
    path: &Path,
    action: &'static str,
) -> Result<()> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(idx_error(
            path,
            "the file ends inside its header; it is truncated or not an IDX file".to_string(),
        )),
        Err(e) if is_stream_error(&e) => Err(gzip_error(path, &e)),
        Err(e) => Err(Error::io(action, path, e)),
    }
}

/// Returns whether a read error comes from a corrupt gzip stream rather
/// than the file system. flate2 1.1 reports those as `InvalidInput` or `InvalidData`.
fn is_stream_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::InvalidInput | ErrorKind::InvalidData
    )
}

fn gzip_error(path: &Path, error: &std::io::Error) -> Error {
    idx_error(
        path,
        format!("the gzip stream is corrupt or cut short ({error}); download the file again"),
    )
}

/// Reads and validates the header and returns the dimensions.
fn read_header<R: Read>(reader: &mut R, path: &Path, gzip: bool) -> Result<Vec<usize>> {
    let action = if gzip { "decompressing" } else { "reading" };
    let mut magic = [0u8; 4];
    read_header_bytes(reader, &mut magic, path, action)?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(idx_error(
            path,
            format!(
                "the file starts with bytes {:02X} {:02X}, but an IDX file starts with 00 00 \
                 (and a gzip file with 1F 8B); this is not an IDX file",
                magic[0], magic[1]
            ),
        ));
    }
    check_type(magic[2], path)?;
    let dim_count = usize::from(magic[3]);
    if dim_count == 0 {
        return Err(idx_error(
            path,
            "the header declares 0 dimensions; expected 1 for labels or at least 2 for images"
                .to_string(),
        ));
    }
    let mut raw_dims = vec![0u8; 4 * dim_count];
    read_header_bytes(reader, &mut raw_dims, path, action)?;
    let dims = raw_dims
        .chunks_exact(4)
        .map(|chunk| u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize)
        .collect();
    Ok(dims)
}

fn check_type(type_byte: u8, path: &Path) -> Result<()> {
    let name = match type_byte {
        TYPE_U8 => return Ok(()),
        0x09 => "signed byte",
        0x0B => "16-bit integer",
        0x0C => "32-bit integer",
        0x0D => "32-bit float",
        0x0E => "64-bit float",
        other => {
            return Err(idx_error(
                path,
                format!(
                    "unknown IDX type 0x{other:02X}; valid IDX types are 0x08, 0x09 and 0x0B to \
                     0x0E, and this reader supports 0x08 (unsigned byte)"
                ),
            ))
        }
    };
    Err(idx_error(
        path,
        format!(
            "unsupported IDX type 0x{type_byte:02X} ({name}); only 0x08 (unsigned byte), the \
             type of MNIST and Fashion-MNIST, is supported"
        ),
    ))
}

/// Number of data bytes the header promises.
fn promised_len(dims: &[usize], path: &Path) -> Result<u64> {
    dims.iter()
        .try_fold(1u64, |total, &d| total.checked_mul(d as u64))
        .filter(|&total| usize::try_from(total).is_ok())
        .ok_or_else(|| {
            idx_error(
                path,
                format!("the dimensions {dims:?} describe more bytes than fit in memory"),
            )
        })
}

fn length_error(path: &Path, dims: &[usize], promised: u64, actual: u64) -> Error {
    if actual < promised {
        idx_error(
            path,
            format!(
                "the header promises {promised} data bytes (dimensions {dims:?}) but only \
                 {actual} follow; the file is truncated"
            ),
        )
    } else {
        idx_error(
            path,
            format!(
                "the header promises {promised} data bytes (dimensions {dims:?}) but more \
                 follow; the file has trailing bytes or a wrong header"
            ),
        )
    }
}

/// Reads the data of an uncompressed file after comparing the promised
/// length with the `available` bytes behind the header.
fn read_raw_data<R: Read>(
    mut reader: R,
    available: u64,
    dims: &[usize],
    path: &Path,
) -> Result<Vec<u8>> {
    let promised = promised_len(dims, path)?;
    if promised != available {
        return Err(length_error(path, dims, promised, available));
    }
    // The length was checked against the file size, so this allocation is
    // no larger than the file.
    let mut data = vec![0u8; promised as usize];
    reader.read_exact(&mut data).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            idx_error(
                path,
                "the file became shorter while it was read".to_string(),
            )
        } else {
            Error::io("reading", path, e)
        }
    })?;
    Ok(data)
}

/// Reads the data of a gzip stream, decompressing at most one byte more
/// than the header promises, so the buffer grows only as far as the data
/// that really exists.
fn read_gzip_data<R: Read>(decoder: R, dims: &[usize], path: &Path) -> Result<Vec<u8>> {
    let promised = promised_len(dims, path)?;
    let mut data = Vec::new();
    decoder
        .take(promised.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| {
            if is_stream_error(&e) || e.kind() == ErrorKind::UnexpectedEof {
                gzip_error(path, &e)
            } else {
                Error::io("decompressing", path, e)
            }
        })?;
    let actual = data.len() as u64;
    if actual != promised {
        return Err(length_error(path, dims, promised, actual));
    }
    Ok(data)
}

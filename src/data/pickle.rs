//! Reader for numpy arrays stored in Python pickles, such as the classic
//! `mnist.pkl.gz`.
//!
//! This is not a general unpickler. It interprets the opcodes of pickle
//! protocols 2 to 5 that Python uses for tuples, lists, dicts, numbers,
//! strings and numpy arrays, and it never imports or calls anything.
//! It accepts only these globals, each interpreted by the reader itself:
//! the numpy functions and types that rebuild an array (`_reconstruct`,
//! `_frombuffer`, `ndarray` and `dtype`, under `numpy.core` or
//! `numpy._core`), `_codecs.encode` (which Python 3 uses for bytes in
//! protocol 2) and `bytes` with no arguments. Every other global, for
//! example `os.system`, is rejected with an error.
//!
//! Supported arrays have a little- or big-endian dtype of float32, float64,
//! signed or unsigned integers of 1, 2, 4 or 8 bytes, or bool, in C or
//! Fortran order. Object arrays, structured dtypes and out-of-band buffers
//! (protocol 5's `NEXT_BUFFER`) are rejected.
//!
//! Files may be gzip-compressed; compression is detected from the first two
//! bytes (1F 8B), never from the file name.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

/// The highest pickle protocol this reader supports.
const HIGHEST_PROTOCOL: u8 = 5;

/// Maximum nesting of tuples, lists and dicts in the result.
const MAX_DEPTH: usize = 64;

/// A value read from a pickle.
#[derive(Clone, Debug, PartialEq)]
pub enum PickleValue {
    /// Python's `None`.
    None,
    /// A Python `bool`.
    Bool(bool),
    /// A Python `int` that fits in 64 bits.
    Int(i64),
    /// A Python `float`.
    Float(f64),
    /// A Python 3 `str`.
    String(String),
    /// A Python 3 `bytes` or `bytearray`, or a Python 2 `str`.
    Bytes(Vec<u8>),
    /// A Python `tuple`.
    Tuple(Vec<PickleValue>),
    /// A Python `list`.
    List(Vec<PickleValue>),
    /// A Python `dict` as key-value pairs in pickle order.
    Dict(Vec<(PickleValue, PickleValue)>),
    /// A numpy array.
    Array(NumpyArray),
}

impl PickleValue {
    /// Returns a short name of the value's Python type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PickleValue::None => "None",
            PickleValue::Bool(_) => "bool",
            PickleValue::Int(_) => "int",
            PickleValue::Float(_) => "float",
            PickleValue::String(_) => "str",
            PickleValue::Bytes(_) => "bytes",
            PickleValue::Tuple(_) => "tuple",
            PickleValue::List(_) => "list",
            PickleValue::Dict(_) => "dict",
            PickleValue::Array(_) => "numpy array",
        }
    }
}

/// The kind of number a numpy dtype stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementKind {
    /// IEEE 754 float (`float32`, `float64`).
    Float,
    /// Two's complement signed integer (`int8` to `int64`).
    Int,
    /// Unsigned integer (`uint8` to `uint64`).
    UInt,
    /// numpy `bool`, one byte of 0 or 1.
    Bool,
}

/// A numpy dtype of plain numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    /// The kind of number.
    pub kind: ElementKind,
    /// Bytes per element: 4 or 8 for floats, 1, 2, 4 or 8 for integers, 1 for bool.
    pub item_size: usize,
    /// Whether multi-byte elements are stored big-endian (numpy's `>`).
    pub big_endian: bool,
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.item_size * 8;
        let order = if self.big_endian && self.item_size > 1 {
            " (big-endian)"
        } else {
            ""
        };
        match self.kind {
            ElementKind::Float => write!(f, "float{bits}{order}"),
            ElementKind::Int => write!(f, "int{bits}{order}"),
            ElementKind::UInt => write!(f, "uint{bits}{order}"),
            ElementKind::Bool => write!(f, "bool"),
        }
    }
}

/// A numpy array as stored in the pickle.
///
/// The reader checks that `data` has `shape.iter().product() * dtype.item_size`
/// bytes and that `dtype` is one it supports. The conversion methods panic
/// on an array built by hand that breaks these invariants.
#[derive(Clone, Debug, PartialEq)]
pub struct NumpyArray {
    /// Element type.
    pub dtype: Dtype,
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// Whether `data` is in Fortran (column-major) order; otherwise it is in
    /// C (row-major) order.
    pub fortran_order: bool,
    /// Raw element bytes, `shape.iter().product() * dtype.item_size` of them.
    pub data: Vec<u8>,
}

impl NumpyArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.item_size
    }

    /// Returns whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Converts the elements to f32 in C (row-major) order.
    ///
    /// float64 and 64-bit integers are rounded to the nearest f32; bool
    /// becomes 0 or 1.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.c_order_elements()
            .map(|bytes| decode_f32(self.dtype, bytes))
            .collect()
    }

    /// Converts integer or bool elements to i128 in C (row-major) order, or
    /// returns `None` for a float array.
    pub fn to_i128_vec(&self) -> Option<Vec<i128>> {
        if self.dtype.kind == ElementKind::Float {
            return None;
        }
        Some(
            self.c_order_elements()
                .map(|bytes| decode_integer(self.dtype, bytes))
                .collect(),
        )
    }

    /// Iterates over the element bytes in C order, transposing Fortran data.
    fn c_order_elements(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let size = self.dtype.item_size;
        let positions: Box<dyn Iterator<Item = usize> + '_> =
            if self.fortran_order && self.shape.len() > 1 {
                Box::new(FortranToC::new(&self.shape))
            } else {
                Box::new(0..self.len())
            };
        positions.map(move |index| &self.data[index * size..(index + 1) * size])
    }
}

/// Yields, for each element in C order, its index in Fortran-ordered storage.
struct FortranToC {
    shape: Vec<usize>,
    fortran_strides: Vec<usize>,
    counter: Vec<usize>,
    remaining: usize,
}

impl FortranToC {
    fn new(shape: &[usize]) -> Self {
        let mut fortran_strides = Vec::with_capacity(shape.len());
        let mut stride = 1usize;
        for &size in shape {
            fortran_strides.push(stride);
            stride = stride.saturating_mul(size);
        }
        FortranToC {
            shape: shape.to_vec(),
            fortran_strides,
            counter: vec![0; shape.len()],
            remaining: shape.iter().product(),
        }
    }
}

impl Iterator for FortranToC {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let index = self
            .counter
            .iter()
            .zip(&self.fortran_strides)
            .map(|(i, stride)| i * stride)
            .sum();
        // Advance the multi-index in C order: the last dimension fastest.
        for axis in (0..self.shape.len()).rev() {
            self.counter[axis] += 1;
            if self.counter[axis] < self.shape[axis] {
                break;
            }
            self.counter[axis] = 0;
        }
        Some(index)
    }
}

/// Copies `bytes` into a little-endian array of N bytes.
fn little_endian<const N: usize>(bytes: &[u8], big_endian: bool) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    if big_endian {
        out.reverse();
    }
    out
}

fn decode_f32(dtype: Dtype, bytes: &[u8]) -> f32 {
    match (dtype.kind, dtype.item_size) {
        (ElementKind::Float, 4) => f32::from_le_bytes(little_endian(bytes, dtype.big_endian)),
        (ElementKind::Float, _) => {
            f64::from_le_bytes(little_endian(bytes, dtype.big_endian)) as f32
        }
        _ => decode_integer(dtype, bytes) as f32,
    }
}

fn decode_integer(dtype: Dtype, bytes: &[u8]) -> i128 {
    let big = dtype.big_endian;
    match (dtype.kind, dtype.item_size) {
        (ElementKind::Int, 1) => i128::from(bytes[0] as i8),
        (ElementKind::Int, 2) => i128::from(i16::from_le_bytes(little_endian(bytes, big))),
        (ElementKind::Int, 4) => i128::from(i32::from_le_bytes(little_endian(bytes, big))),
        (ElementKind::Int, _) => i128::from(i64::from_le_bytes(little_endian(bytes, big))),
        (_, 1) => i128::from(bytes[0]),
        (_, 2) => i128::from(u16::from_le_bytes(little_endian(bytes, big))),
        (_, 4) => i128::from(u32::from_le_bytes(little_endian(bytes, big))),
        (_, _) => i128::from(u64::from_le_bytes(little_endian(bytes, big))),
    }
}

/// Reads a pickle file, raw or gzip-compressed, holding numpy arrays.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read. [`Error::Pickle`] naming the
/// file if it is not a pickle of protocol 2 to 5, is truncated, refers to a
/// global outside the numpy allow-list, or contains an array this reader does
/// not support.
pub fn read_numpy_pickle(path: impl AsRef<Path>) -> Result<PickleValue> {
    let path = path.as_ref();
    let metadata = std::fs::metadata(path).map_err(|e| Error::io("opening", path, e))?;
    if metadata.is_dir() {
        return Err(Error::io(
            "reading",
            path,
            std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "this is a directory; expected a pickle file",
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    parse_numpy_pickle(&bytes, path)
}

/// Parses a pickle held in memory, raw or gzip-compressed.
///
/// `path` only names the data in error messages.
///
/// # Errors
/// [`Error::Pickle`] for the same inputs as [`read_numpy_pickle`].
pub fn parse_numpy_pickle(bytes: &[u8], path: impl AsRef<Path>) -> Result<PickleValue> {
    let path = path.as_ref();
    if bytes.starts_with(&[0x1F, 0x8B]) {
        // Deflate expands data by at most about 1032 times, so this buffer
        // is at most about 1032 times the compressed size.
        let mut decompressed = Vec::new();
        MultiGzDecoder::new(bytes)
            .read_to_end(&mut decompressed)
            .map_err(|e| Error::Pickle {
                path: path.to_path_buf(),
                reason: format!(
                    "the gzip stream is corrupt or cut short ({e}); download the file again"
                ),
            })?;
        Machine::new(&decompressed, path).run()
    } else {
        Machine::new(bytes, path).run()
    }
}

/// The globals the reader accepts. Each is interpreted by the reader itself;
/// nothing is imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    /// `numpy.core.multiarray._reconstruct`: creates an empty array that BUILD fills.
    Reconstruct,
    /// `numpy.core.numeric._frombuffer`: protocol 5's array from a buffer.
    FromBuffer,
    /// `numpy.ndarray`, passed to `_reconstruct`.
    Ndarray,
    /// `numpy.dtype`.
    Dtype,
    /// `_codecs.encode`, which Python 3 uses for bytes in protocol 2.
    CodecsEncode,
    /// `bytes`, which Python 3 calls with no arguments for `b''` in protocol 2.
    Bytes,
}

fn lookup_global(module: &str, name: &str) -> Option<Global> {
    let numpy_core = |sub: &str| {
        module
            .strip_prefix("numpy.core.")
            .or_else(|| module.strip_prefix("numpy._core."))
            == Some(sub)
    };
    match name {
        "_reconstruct" if numpy_core("multiarray") => Some(Global::Reconstruct),
        "_frombuffer" if numpy_core("numeric") => Some(Global::FromBuffer),
        "ndarray" if module == "numpy" => Some(Global::Ndarray),
        "dtype" if module == "numpy" => Some(Global::Dtype),
        "encode" if module == "_codecs" => Some(Global::CodecsEncode),
        "bytes" if module == "builtins" || module == "__builtin__" => Some(Global::Bytes),
        _ => None,
    }
}

/// Bytes that are either a range of the input or built by the reader.
#[derive(Clone, Debug)]
enum Payload {
    Input(Range<usize>),
    /// Shared, so that BUILD and the memo reuse bytes without copying them.
    Owned(Rc<[u8]>),
}

#[derive(Clone, Debug)]
struct ArrayState {
    dtype: Dtype,
    shape: Vec<usize>,
    fortran_order: bool,
    data: Payload,
}

/// An object of the pickle machine. Containers refer to other objects by
/// their index in the arena, so memo entries alias the same object.
#[derive(Clone, Debug)]
enum Object {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Payload),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    /// A dtype from `numpy.dtype(...)`; BUILD may still set its byte order.
    Dtype(Dtype),
    /// An array from `_reconstruct`, empty until BUILD fills it.
    EmptyArray,
    Array(ArrayState),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::None => "None",
            Object::Bool(_) => "bool",
            Object::Int(_) => "int",
            Object::Float(_) => "float",
            Object::Str(_) => "str",
            Object::Bytes(_) => "bytes",
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Global(_) => "global",
            Object::Dtype(_) => "dtype",
            Object::EmptyArray | Object::Array(_) => "numpy array",
        }
    }
}

/// The pickle virtual machine: a stack, mark positions, a memo and an
/// arena of objects.
struct Machine<'a> {
    input: &'a [u8],
    path: &'a Path,
    position: usize,
    /// Offset of the opcode being executed, for error messages.
    opcode_offset: usize,
    arena: Vec<Object>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8], path: &'a Path) -> Self {
        Machine {
            input,
            path,
            position: 0,
            opcode_offset: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Pickle {
            path: self.path.to_path_buf(),
            reason: format!("at byte {}: {}", self.opcode_offset, reason.into()),
        }
    }

    fn run(mut self) -> Result<PickleValue> {
        match self.input.first() {
            None => {
                return Err(Error::Pickle {
                    path: self.path.to_path_buf(),
                    reason: "the file is empty".to_string(),
                })
            }
            Some(0x80) => {}
            Some(&first) => {
                return Err(Error::Pickle {
                    path: self.path.to_path_buf(),
                    reason: format!(
                        "the data starts with byte 0x{first:02X}, not with the PROTO opcode (0x80) \
                         of pickle protocols 2 to 5; this is not a supported pickle file"
                    ),
                })
            }
        }
        loop {
            self.opcode_offset = self.position;
            let opcode = self.read_u8().map_err(|_| {
                self.error("the data ends without a STOP opcode; the file is truncated")
            })?;
            if opcode == b'.' {
                return self.finish();
            }
            self.step(opcode)?;
        }
    }

    /// Checks the state at STOP and converts the result.
    fn finish(self) -> Result<PickleValue> {
        if self.position != self.input.len() {
            return Err(self.error(format!(
                "{} bytes follow the STOP opcode; the file contains more than one pickle or is corrupt",
                self.input.len() - self.position
            )));
        }
        if !self.marks.is_empty() || self.stack.len() != 1 {
            return Err(self.error(format!(
                "STOP found with {} objects and {} marks on the stack; expected exactly one object",
                self.stack.len(),
                self.marks.len()
            )));
        }
        let top = self.stack[0];
        // Shared objects are copied each time they are reached; the budget
        // stops a small pickle from expanding into a huge result.
        let mut budget = Budget {
            nodes: self.arena.len().saturating_mul(4).saturating_add(64),
            bytes: self.input.len().saturating_mul(2).saturating_add(64),
        };
        self.convert(top, 0, &mut budget)
    }

    fn step(&mut self, opcode: u8) -> Result<()> {
        match opcode {
            // Protocol and framing.
            0x80 => {
                let protocol = self.read_u8()?;
                if protocol > HIGHEST_PROTOCOL {
                    return Err(self.error(format!(
                        "pickle protocol {protocol} is newer than {HIGHEST_PROTOCOL}, the highest this reader supports"
                    )));
                }
            }
            0x95 => {
                // FRAME only groups opcodes for buffered reading, so its length
                // is checked and otherwise ignored.
                let length = self.read_u64()?;
                if length > (self.input.len() - self.position) as u64 {
                    return Err(self.error(format!(
                        "a FRAME of {length} bytes starts here but only {} bytes remain; the file is truncated",
                        self.input.len() - self.position
                    )));
                }
            }

            // Stack manipulation.
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }

            // Constants and numbers.
            b'N' => self.push(Object::None),
            0x88 => self.push(Object::Bool(true)),
            0x89 => self.push(Object::Bool(false)),
            b'J' => {
                let value = i32::from_le_bytes(self.read_array()?);
                self.push(Object::Int(i64::from(value)));
            }
            b'K' => {
                let value = self.read_u8()?;
                self.push(Object::Int(i64::from(value)));
            }
            b'M' => {
                let value = u16::from_le_bytes(self.read_array()?);
                self.push(Object::Int(i64::from(value)));
            }
            0x8A => {
                let length = usize::from(self.read_u8()?);
                let value = self.read_long(length)?;
                self.push(Object::Int(value));
            }
            b'G' => {
                let value = f64::from_be_bytes(self.read_array()?);
                self.push(Object::Float(value));
            }

            // Byte strings: Python 2 str, Python 3 bytes and bytearray.
            b'U' | b'C' => {
                let length = usize::from(self.read_u8()?);
                self.push_bytes(length)?;
            }
            b'T' => {
                let length = i32::from_le_bytes(self.read_array()?);
                let length = usize::try_from(length)
                    .map_err(|_| self.error(format!("BINSTRING has negative length {length}")))?;
                self.push_bytes(length)?;
            }
            b'B' => {
                let length = u32::from_le_bytes(self.read_array()?) as usize;
                self.push_bytes(length)?;
            }
            0x8E | 0x96 => {
                let length = self.read_u64()?;
                let length = usize::try_from(length)
                    .map_err(|_| self.error("byte string length overflows"))?;
                self.push_bytes(length)?;
            }

            // Unicode strings.
            0x8C => {
                let length = usize::from(self.read_u8()?);
                self.push_unicode(length)?;
            }
            b'X' => {
                let length = u32::from_le_bytes(self.read_array()?) as usize;
                self.push_unicode(length)?;
            }
            0x8D => {
                let length = self.read_u64()?;
                let length =
                    usize::try_from(length).map_err(|_| self.error("string length overflows"))?;
                self.push_unicode(length)?;
            }

            // Tuples, lists and dicts.
            b')' => self.push(Object::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Object::Tuple(items));
            }
            0x85..=0x87 => {
                let count = usize::from(opcode - 0x84);
                if self.stack.len() < count + self.marks.last().copied().unwrap_or(0) {
                    return Err(
                        self.error(format!("TUPLE{count} needs {count} objects on the stack"))
                    );
                }
                let items = self.stack.split_off(self.stack.len() - count);
                self.push(Object::Tuple(items));
            }
            b']' => self.push(Object::List(Vec::new())),
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Object::List(items));
            }
            b'a' => {
                let item = self.pop()?;
                let list = self.top()?;
                self.list_mut(list)?.push(item);
            }
            b'e' => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.list_mut(list)?.extend(items);
            }
            b'}' => self.push(Object::Dict(Vec::new())),
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push(Object::Dict(pairs));
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.dict_mut(dict)?.push((key, value));
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let dict = self.top()?;
                self.dict_mut(dict)?.extend(pairs);
            }

            // Memo.
            b'q' => {
                let key = u64::from(self.read_u8()?);
                self.memo_put(key)?;
            }
            b'r' => {
                let key = u64::from(u32::from_le_bytes(self.read_array()?));
                self.memo_put(key)?;
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            b'h' => {
                let key = u64::from(self.read_u8()?);
                self.memo_get(key)?;
            }
            b'j' => {
                let key = u64::from(u32::from_le_bytes(self.read_array()?));
                self.memo_get(key)?;
            }

            // Globals and object construction.
            b'c' => {
                let module = self.read_line()?;
                let name = self.read_line()?;
                self.push_global(&module, &name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Object::Str(module), Object::Str(name)) =
                    (&self.arena[module], &self.arena[name])
                else {
                    return Err(self.error("STACK_GLOBAL needs two strings on the stack"));
                };
                let (module, name) = (module.clone(), name.clone());
                self.push_global(&module, &name)?;
            }
            b'R' => self.reduce()?,
            b'b' => self.build()?,

            0x97 | 0x98 => {
                return Err(self.error(
                    "out-of-band buffers (NEXT_BUFFER, READONLY_BUFFER) are not supported; \
                     save the pickle without a buffer_callback so the array data is in the file",
                ))
            }
            other => {
                let printable = if other.is_ascii_graphic() {
                    format!(" '{}'", other as char)
                } else {
                    String::new()
                };
                return Err(self.error(format!(
                    "unsupported opcode 0x{other:02X}{printable}; this reader supports the opcodes of \
                     protocols 2 to 5 that numpy arrays, tuples, lists and dicts use"
                )));
            }
        }
        Ok(())
    }

    // Reading the input.

    fn take(&mut self, length: usize) -> Result<&'a [u8]> {
        let remaining = self.input.len() - self.position;
        if length > remaining {
            return Err(self.error(format!(
                "the opcode needs {length} more bytes but only {remaining} remain; the file is truncated"
            )));
        }
        let start = self.position;
        self.position += length;
        Ok(&self.input[start..start + length])
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn read_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.read_array()?))
    }

    /// Reads LONG1's little-endian two's complement integer of `length` bytes.
    fn read_long(&mut self, length: usize) -> Result<i64> {
        if length > 8 {
            return Err(self.error(format!("integer of {length} bytes does not fit in 64 bits")));
        }
        let bytes = self.take(length)?;
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buffer = if negative { [0xFF; 8] } else { [0; 8] };
        buffer[..length].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(buffer))
    }

    /// Reads a newline-terminated ASCII line, as GLOBAL's arguments are.
    fn read_line(&mut self) -> Result<String> {
        let rest = &self.input[self.position..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.error(
                "GLOBAL's module or name has no terminating newline; the file is truncated",
            ));
        };
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.error("GLOBAL's module or name is not valid text"))?
            .to_string();
        self.position += end + 1;
        Ok(line)
    }

    // The stack and the arena.

    fn push(&mut self, object: Object) {
        self.arena.push(object);
        self.stack.push(self.arena.len() - 1);
    }

    fn push_bytes(&mut self, length: usize) -> Result<()> {
        let start = self.position;
        self.take(length)?;
        self.push(Object::Bytes(Payload::Input(start..start + length)));
        Ok(())
    }

    fn push_unicode(&mut self, length: usize) -> Result<()> {
        let bytes = self.take(length)?;
        // Python writes lone surrogates with "surrogatepass", and those fail
        // here. The strings of numpy array pickles are ASCII.
        let text = std::str::from_utf8(bytes)
            .map_err(|_| self.error("a unicode string is not valid UTF-8"))?
            .to_string();
        self.push(Object::Str(text));
        Ok(())
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<()> {
        match lookup_global(module, name) {
            Some(global) => {
                self.push(Object::Global(global));
                Ok(())
            }
            None => Err(self.error(format!(
                "the pickle refers to `{module}.{name}`, which is not allowed; this reader only \
                 accepts the numpy globals that rebuild arrays, so it never runs code from a file"
            ))),
        }
    }

    fn top(&self) -> Result<usize> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&top) if self.stack.len() > floor => Ok(top),
            _ => Err(self.error("the opcode needs an object but the stack is empty")),
        }
    }

    fn pop(&mut self) -> Result<usize> {
        let top = self.top()?;
        self.stack.pop();
        Ok(top)
    }

    fn pop_mark(&mut self) -> Result<Vec<usize>> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.error("the opcode needs a MARK but there is none"));
        };
        Ok(self.stack.split_off(mark))
    }

    fn pairs(&self, items: Vec<usize>) -> Result<Vec<(usize, usize)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.error("a dict needs an even number of keys and values"));
        }
        Ok(items
            .chunks_exact(2)
            .map(|pair| (pair[0], pair[1]))
            .collect())
    }

    fn list_mut(&mut self, index: usize) -> Result<&mut Vec<usize>> {
        if !matches!(self.arena[index], Object::List(_)) {
            let kind = self.arena[index].kind();
            return Err(self.error(format!("APPEND needs a list, found a {kind}")));
        }
        match &mut self.arena[index] {
            Object::List(items) => Ok(items),
            _ => unreachable!("checked above"),
        }
    }

    fn dict_mut(&mut self, index: usize) -> Result<&mut Vec<(usize, usize)>> {
        if !matches!(self.arena[index], Object::Dict(_)) {
            let kind = self.arena[index].kind();
            return Err(self.error(format!("SETITEM needs a dict, found a {kind}")));
        }
        match &mut self.arena[index] {
            Object::Dict(pairs) => Ok(pairs),
            _ => unreachable!("checked above"),
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<()> {
        let Some(&index) = self.memo.get(&key) else {
            return Err(self.error(format!("memo key {key} is read before it is written")));
        };
        self.stack.push(index);
        Ok(())
    }

    fn payload<'p>(&'p self, payload: &'p Payload) -> &'p [u8] {
        match payload {
            Payload::Input(range) => &self.input[range.clone()],
            Payload::Owned(bytes) => bytes,
        }
    }

    // Object construction: REDUCE and BUILD for the allowed globals.

    fn reduce(&mut self) -> Result<()> {
        let arguments = self.pop()?;
        let callable = self.pop()?;
        let Object::Global(global) = self.arena[callable] else {
            return Err(self.error(format!(
                "REDUCE can only call an allowed global, not a {}",
                self.arena[callable].kind()
            )));
        };
        // Every allowed global takes at most 4 arguments. Checking that
        // before the copy keeps a huge shared tuple from being copied per call.
        let arguments = match &self.arena[arguments] {
            Object::Tuple(items) if items.len() <= 4 => items.clone(),
            Object::Tuple(items) => {
                return Err(self.error(format!(
                    "REDUCE with {} arguments is not supported; the allowed globals take at most 4",
                    items.len()
                )))
            }
            _ => return Err(self.error("REDUCE needs a tuple of arguments")),
        };
        let object = match global {
            Global::Reconstruct => self.reconstruct(&arguments)?,
            Global::FromBuffer => self.frombuffer(&arguments)?,
            Global::Dtype => self.new_dtype(&arguments)?,
            Global::CodecsEncode => self.codecs_encode(&arguments)?,
            Global::Bytes if arguments.is_empty() => {
                Object::Bytes(Payload::Owned(Rc::from(Vec::new())))
            }
            Global::Bytes => return Err(self.error("`bytes` is only supported with no arguments")),
            Global::Ndarray => {
                return Err(
                    self.error("numpy.ndarray can only be passed to _reconstruct, not called")
                )
            }
        };
        self.push(object);
        Ok(())
    }

    /// `_reconstruct(numpy.ndarray, shape, b'b')` creates an empty array for BUILD to fill.
    fn reconstruct(&self, arguments: &[usize]) -> Result<Object> {
        match arguments {
            [class, _, _] if matches!(self.arena[*class], Object::Global(Global::Ndarray)) => {
                Ok(Object::EmptyArray)
            }
            _ => Err(self.error(
                "_reconstruct needs the arguments (numpy.ndarray, shape, typecode); \
                 subclasses of ndarray are not supported",
            )),
        }
    }

    /// `_frombuffer(buffer, dtype, shape, order)`, protocol 5's form of an array.
    fn frombuffer(&self, arguments: &[usize]) -> Result<Object> {
        let [buffer, dtype, shape, order] = arguments else {
            return Err(self.error("_frombuffer needs the arguments (buffer, dtype, shape, order)"));
        };
        let Object::Bytes(data) = &self.arena[*buffer] else {
            return Err(self.error(format!(
                "_frombuffer's buffer must be bytes, found a {}",
                self.arena[*buffer].kind()
            )));
        };
        let dtype = self.dtype_of(*dtype)?;
        let shape = self.shape_of(*shape)?;
        let fortran_order = match self.text_of(*order) {
            Some("C") => false,
            Some("F") => true,
            _ => return Err(self.error("_frombuffer's order must be 'C' or 'F'")),
        };
        self.make_array(dtype, shape, fortran_order, data.clone())
    }

    /// `numpy.dtype(typestring, align, copy)`, for example `dtype('f4', False, True)`.
    fn new_dtype(&self, arguments: &[usize]) -> Result<Object> {
        let Some(&first) = arguments.first() else {
            return Err(self.error("numpy.dtype needs a type string such as 'f4'"));
        };
        let Some(text) = self.text_of(first) else {
            return Err(
                self.error("numpy.dtype's first argument must be a type string such as 'f4'")
            );
        };
        let dtype = parse_type_string(text).map_err(|reason| self.error(reason))?;
        Ok(Object::Dtype(dtype))
    }

    /// `_codecs.encode(text, 'latin1')`: Python 3's protocol-2 form of bytes.
    fn codecs_encode(&self, arguments: &[usize]) -> Result<Object> {
        let [text, encoding] = arguments else {
            return Err(self.error("_codecs.encode needs the arguments (text, 'latin1')"));
        };
        let (Object::Str(text), Some("latin1" | "latin-1")) =
            (&self.arena[*text], self.text_of(*encoding))
        else {
            return Err(
                self.error("_codecs.encode is only supported for a str and the encoding 'latin1'")
            );
        };
        let mut bytes = Vec::with_capacity(text.len());
        for character in text.chars() {
            let code = u32::from(character);
            let Ok(byte) = u8::try_from(code) else {
                return Err(self.error(format!(
                    "character U+{code:04X} cannot be encoded as latin1"
                )));
            };
            bytes.push(byte);
        }
        Ok(Object::Bytes(Payload::Owned(Rc::from(bytes))))
    }

    fn build(&mut self) -> Result<()> {
        let state = self.pop()?;
        let target = self.top()?;
        let built = match &self.arena[target] {
            Object::Dtype(dtype) => self.build_dtype(*dtype, state)?,
            Object::EmptyArray => self.build_array(state)?,
            other => {
                return Err(self.error(format!(
                    "BUILD is only supported on a dtype or an array from _reconstruct, not on a {}",
                    other.kind()
                )))
            }
        };
        self.arena[target] = built;
        Ok(())
    }

    /// Applies a dtype's state `(version, byteorder, subarray, names, fields, ...)`.
    fn build_dtype(&self, dtype: Dtype, state: usize) -> Result<Object> {
        let Object::Tuple(items) = &self.arena[state] else {
            return Err(self.error("a dtype's state must be a tuple"));
        };
        if items.len() < 5 {
            return Err(self.error(format!(
                "a dtype's state has {} items; expected at least 5",
                items.len()
            )));
        }
        let big_endian = match self.text_of(items[1]) {
            Some("<") | Some("|") => false,
            Some(">") => true,
            _ => return Err(self.error("a dtype's byte order must be '<', '>' or '|'")),
        };
        let structured = items[2..5]
            .iter()
            .any(|&item| !matches!(self.arena[item], Object::None));
        if structured {
            return Err(self.error(
                "structured and subarray dtypes are not supported; store plain number arrays",
            ));
        }
        Ok(Object::Dtype(Dtype {
            big_endian,
            ..dtype
        }))
    }

    /// Applies an array's state `(version, shape, dtype, is_fortran, data)`;
    /// older numpy versions omit the version.
    fn build_array(&self, state: usize) -> Result<Object> {
        let Object::Tuple(items) = &self.arena[state] else {
            return Err(self.error("an array's state must be a tuple"));
        };
        let (shape, dtype, fortran, data) = match items.as_slice() {
            [_, shape, dtype, fortran, data] | [shape, dtype, fortran, data] => {
                (*shape, *dtype, *fortran, *data)
            }
            _ => {
                return Err(self.error(format!(
                    "an array's state has {} items; expected 5",
                    items.len()
                )))
            }
        };
        let dtype = self.dtype_of(dtype)?;
        let shape = self.shape_of(shape)?;
        let fortran_order = match self.arena[fortran] {
            Object::Bool(flag) => flag,
            Object::Int(flag) => flag != 0,
            _ => return Err(self.error("an array's Fortran flag must be a bool")),
        };
        let data =
            match &self.arena[data] {
                Object::Bytes(payload) => payload.clone(),
                Object::List(_) => return Err(self.error(
                    "the array stores Python objects (dtype 'O'); object arrays are not supported",
                )),
                other => {
                    return Err(self.error(format!(
                        "an array's data must be bytes, found a {}",
                        other.kind()
                    )))
                }
            };
        self.make_array(dtype, shape, fortran_order, data)
    }

    fn make_array(
        &self,
        dtype: Dtype,
        shape: Vec<usize>,
        fortran_order: bool,
        data: Payload,
    ) -> Result<Object> {
        let needed = shape
            .iter()
            .try_fold(dtype.item_size, |total, &size| total.checked_mul(size));
        let actual = self.payload(&data).len();
        if needed != Some(actual) {
            let needed =
                needed.map_or_else(|| "more than fit in memory".to_string(), |n| n.to_string());
            return Err(self.error(format!(
                "the array of shape {shape:?} and dtype {dtype} needs {needed} bytes of data, but the pickle holds {actual}"
            )));
        }
        Ok(Object::Array(ArrayState {
            dtype,
            shape,
            fortran_order,
            data,
        }))
    }

    fn dtype_of(&self, index: usize) -> Result<Dtype> {
        match &self.arena[index] {
            Object::Dtype(dtype) => Ok(*dtype),
            other => Err(self.error(format!("expected a numpy dtype, found a {}", other.kind()))),
        }
    }

    fn shape_of(&self, index: usize) -> Result<Vec<usize>> {
        let Object::Tuple(items) = &self.arena[index] else {
            return Err(self.error("an array's shape must be a tuple"));
        };
        items
            .iter()
            .map(|&item| match self.arena[item] {
                Object::Int(size) => usize::try_from(size)
                    .map_err(|_| self.error(format!("array dimension {size} is negative"))),
                _ => Err(self.error("an array's shape must contain integers")),
            })
            .collect()
    }

    /// Returns the text of a str, or of a Python 2 str (bytes) that is valid UTF-8.
    fn text_of(&self, index: usize) -> Option<&str> {
        match &self.arena[index] {
            Object::Str(text) => Some(text),
            Object::Bytes(payload) => std::str::from_utf8(self.payload(payload)).ok(),
            _ => None,
        }
    }

    // Conversion of the result.

    fn convert(&self, index: usize, depth: usize, budget: &mut Budget) -> Result<PickleValue> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!(
                "the result is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        budget.spend_node().map_err(|reason| self.error(reason))?;
        let convert_all = |items: &[usize], budget: &mut Budget| -> Result<Vec<PickleValue>> {
            items
                .iter()
                .map(|&item| self.convert(item, depth + 1, budget))
                .collect()
        };
        let value = match &self.arena[index] {
            Object::None => PickleValue::None,
            Object::Bool(flag) => PickleValue::Bool(*flag),
            Object::Int(value) => PickleValue::Int(*value),
            Object::Float(value) => PickleValue::Float(*value),
            Object::Str(text) => {
                budget
                    .spend_bytes(text.len())
                    .map_err(|reason| self.error(reason))?;
                PickleValue::String(text.clone())
            }
            Object::Bytes(payload) => PickleValue::Bytes(self.copy_payload(payload, budget)?),
            Object::Tuple(items) => PickleValue::Tuple(convert_all(items, budget)?),
            Object::List(items) => PickleValue::List(convert_all(items, budget)?),
            Object::Dict(pairs) => {
                let mut converted = Vec::with_capacity(pairs.len());
                for &(key, value) in pairs {
                    converted.push((
                        self.convert(key, depth + 1, budget)?,
                        self.convert(value, depth + 1, budget)?,
                    ));
                }
                PickleValue::Dict(converted)
            }
            Object::Array(array) => PickleValue::Array(NumpyArray {
                dtype: array.dtype,
                shape: array.shape.clone(),
                fortran_order: array.fortran_order,
                data: self.copy_payload(&array.data, budget)?,
            }),
            Object::EmptyArray => {
                return Err(self.error("an array from _reconstruct was never filled by BUILD"))
            }
            Object::Global(_) | Object::Dtype(_) => {
                return Err(self.error(format!(
                    "the result contains a bare {}, which this reader does not return",
                    self.arena[index].kind()
                )))
            }
        };
        Ok(value)
    }

    fn copy_payload(&self, payload: &Payload, budget: &mut Budget) -> Result<Vec<u8>> {
        let bytes = self.payload(payload);
        budget
            .spend_bytes(bytes.len())
            .map_err(|reason| self.error(reason))?;
        Ok(bytes.to_vec())
    }
}

/// Limits on the size of the converted result.
struct Budget {
    nodes: usize,
    bytes: usize,
}

const BUDGET_EXCEEDED: &str =
    "the result shares objects so often that expanding it would exceed the size limit";

impl Budget {
    fn spend_node(&mut self) -> std::result::Result<(), &'static str> {
        self.nodes = self.nodes.checked_sub(1).ok_or(BUDGET_EXCEEDED)?;
        Ok(())
    }

    fn spend_bytes(&mut self, count: usize) -> std::result::Result<(), &'static str> {
        self.bytes = self.bytes.checked_sub(count).ok_or(BUDGET_EXCEEDED)?;
        Ok(())
    }
}

/// Parses numpy's type string, for example `f4`, `<i8` or `u1`.
fn parse_type_string(text: &str) -> std::result::Result<Dtype, String> {
    let (big_endian, rest) = match text.as_bytes().first() {
        Some(b'>') => (true, &text[1..]),
        Some(b'<' | b'|' | b'=') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut characters = rest.chars();
    let kind_char = characters.next();
    let size: Option<usize> = characters.as_str().parse().ok();
    let kind = match (kind_char, size) {
        (Some('f'), Some(4 | 8)) => ElementKind::Float,
        (Some('i'), Some(1 | 2 | 4 | 8)) => ElementKind::Int,
        (Some('u'), Some(1 | 2 | 4 | 8)) => ElementKind::UInt,
        (Some('b'), Some(1)) => ElementKind::Bool,
        (Some('O'), _) => {
            return Err("the array stores Python objects (dtype 'O'); object arrays are not supported".to_string())
        }
        _ => {
            return Err(format!(
                "unsupported dtype '{text}'; supported dtypes are float32, float64, signed and unsigned \
                 integers of 1 to 8 bytes, and bool"
            ))
        }
    };
    Ok(Dtype {
        kind,
        item_size: size.unwrap_or(1),
        big_endian,
    })
}

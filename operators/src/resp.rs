//! Redis commands encoded in RESP, for the sink's one write of a batch.
//!
//! A batch writes ~15k arguments (item factors, versions, neighbour lists, user records).
//! Built as Python objects and packed by hiredis they cost ~15% of the flow's wall time
//! (perf, Taobao head: `pack_command` 13%, plus the objects and the collector's work). Here
//! the native side lays out the bulk arguments it produces (`RespArgs`), and
//! `state/store.py`, which owns every key, still names every command and key
//! (`RespBatch.command`): the layout of the writes stays readable in one Python function.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString, PyTuple};

/// Buffers kept for reuse. A batch's buffers are hundreds of KiB: allocated afresh each
/// batch, they came from new huge pages the kernel zeroed on first touch, which perf put at
/// ~18% of the flow's wall time. Reused, they are touched once per process.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const POOL_KEPT: usize = 64;
/// Buffers larger than this are not kept (a freak batch must not pin its memory).
const POOL_MAX_BYTES: usize = 16 << 20;

/// A byte buffer taken from the pool and returned to it when dropped.
#[derive(Debug, PartialEq, Eq)]
struct Buffer(Vec<u8>);

impl Buffer {
    fn new() -> Self {
        let reused = POOL.lock().ok().and_then(|mut pool| pool.pop());
        Buffer(reused.unwrap_or_default())
    }
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer::new()
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        let mut copy = Buffer::new();
        copy.0.extend_from_slice(&self.0);
        copy
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0);
        if bytes.capacity() == 0 || bytes.capacity() > POOL_MAX_BYTES {
            return;
        }
        bytes.clear();
        if let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_KEPT
        {
            pool.push(bytes);
        }
    }
}

impl Deref for Buffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// `n` in decimal, in a stack buffer: (digits, where they start). What `write!` does, without
/// the formatting machinery or an allocation: a batch writes tens of thousands of numbers.
fn decimal(mut n: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (digits, at)
}

/// Append `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let (digits, at) = decimal(n);
    out.extend_from_slice(&digits[at..]);
}

/// Append one bulk string (`$<len>\r\n<bytes>\r\n`).
fn push_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    out.push(b'$');
    push_decimal(out, arg.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Arguments already encoded as bulk strings, spliced into a command by `RespBatch.command`.
#[pyclass(module = "operators._native", frozen, skip_from_py_object)]
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct RespArgs {
    encoded: Buffer,
    count: usize,
}

impl RespArgs {
    pub fn new() -> Self {
        RespArgs::default()
    }

    pub fn push(&mut self, arg: &[u8]) {
        push_bulk(&mut self.encoded, arg);
        self.count += 1;
    }

    pub fn push_str(&mut self, arg: &str) {
        self.push(arg.as_bytes());
    }

    pub fn push_u64(&mut self, value: u64) {
        let (digits, at) = decimal(value);
        self.push(&digits[at..]);
    }

    /// A score as Redis reads it (strtod): Rust's shortest round-trip form reads back exactly.
    pub fn push_f64(&mut self, value: f64) {
        self.push_str(&value.to_string());
    }

    /// Raw little-endian float32s, the stored vector layout (`state/records.py`).
    pub fn push_vector(&mut self, vector: &[f32]) {
        self.encoded.push(b'$');
        push_decimal(&mut self.encoded, (vector.len() * 4) as u64);
        self.encoded.extend_from_slice(b"\r\n");
        for x in vector {
            self.encoded.extend_from_slice(&x.to_le_bytes());
        }
        self.encoded.extend_from_slice(b"\r\n");
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[pymethods]
impl RespArgs {
    fn __len__(&self) -> usize {
        self.count
    }

    fn __repr__(&self) -> String {
        format!("RespArgs({} arguments, {} bytes)", self.count, self.encoded.len())
    }
}

/// Commands to send in one write, in order; `len()` is how many replies to read.
#[pyclass(module = "operators._native")]
#[derive(Default)]
pub struct RespBatch {
    encoded: Buffer,
    commands: usize,
}

impl RespBatch {
    fn push_arg(&mut self, arg: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(text) = arg.cast::<PyString>() {
            push_bulk(&mut self.encoded, text.to_str()?.as_bytes());
        } else if let Ok(bytes) = arg.cast::<PyBytes>() {
            push_bulk(&mut self.encoded, bytes.as_bytes());
        } else if arg.is_instance_of::<PyInt>() && !arg.is_instance_of::<pyo3::types::PyBool>() {
            let value: i128 = arg.extract()?;
            push_bulk(&mut self.encoded, value.to_string().as_bytes());
        } else if let Ok(args) = arg.cast::<RespArgs>() {
            self.encoded.extend_from_slice(&args.get().encoded);
        } else {
            // Floats have two textual forms (Python's repr, Rust's shortest): the caller picks.
            return Err(PyTypeError::new_err(format!(
                "a command argument is str, bytes, int or RespArgs, not {}",
                arg.get_type().name()?
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl RespBatch {
    #[new]
    fn py_new() -> Self {
        RespBatch::default()
    }

    /// Append a command: its arguments in order, a `RespArgs` standing for all of its own.
    #[pyo3(signature = (*args))]
    fn command(&mut self, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let mut count = 0;
        for arg in args.iter() {
            count += match arg.cast::<RespArgs>() {
                Ok(spliced) => spliced.get().count,
                Err(_) => 1,
            };
        }
        if count == 0 {
            return Err(PyTypeError::new_err("a command needs at least its name"));
        }
        let rollback = self.encoded.len();
        self.encoded.push(b'*');
        push_decimal(&mut self.encoded, count as u64);
        self.encoded.extend_from_slice(b"\r\n");
        for arg in args.iter() {
            if let Err(err) = self.push_arg(&arg) {
                self.encoded.truncate(rollback);
                return Err(err);
            }
        }
        self.commands += 1;
        Ok(())
    }

    /// How many commands (and so replies).
    fn __len__(&self) -> usize {
        self.commands
    }

    /// The encoded commands, to send as they are.
    fn encoded<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.encoded)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RespArgs>()?;
    m.add_class::<RespBatch>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_strings_carry_their_byte_length() {
        let mut args = RespArgs::new();
        args.push_str("ab");
        args.push(b"");
        args.push_str("é");
        assert_eq!(*args.encoded, b"$2\r\nab\r\n$0\r\n\r\n$2\r\n\xc3\xa9\r\n");
        assert_eq!(args.len(), 3);
    }

    #[test]
    fn numbers_are_decimal_text() {
        let mut args = RespArgs::new();
        args.push_u64(0);
        args.push_u64(u64::MAX);
        args.push_f64(-0.5);
        args.push_f64(3.0);
        let text = String::from_utf8(args.encoded.to_vec()).unwrap();
        assert_eq!(text, "$1\r\n0\r\n$20\r\n18446744073709551615\r\n$4\r\n-0.5\r\n$1\r\n3\r\n");
        assert_eq!("3".parse::<f64>().unwrap(), 3.0);
    }

    #[test]
    fn decimals_of_every_width() {
        for n in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn buffers_come_back_empty_from_the_pool() {
        let mut first = Buffer::new();
        first.extend_from_slice(b"leftover");
        drop(first);
        for _ in 0..POOL_KEPT + 1 {
            assert!(Buffer::new().is_empty());
        }
    }

    #[test]
    fn vectors_are_little_endian_float32s() {
        let mut args = RespArgs::new();
        args.push_vector(&[1.0, -2.5]);
        let mut expected = b"$8\r\n".to_vec();
        expected.extend_from_slice(&1.0f32.to_le_bytes());
        expected.extend_from_slice(&(-2.5f32).to_le_bytes());
        expected.extend_from_slice(b"\r\n");
        assert_eq!(*args.encoded, expected);
        assert_eq!(args.len(), 1);
    }
}

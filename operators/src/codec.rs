//! The byte format of snapshots: little-endian numbers, LEB128 lengths, UTF-8 strings.
//!
//! Every snapshot starts with a magic tag and a format version (see each state's module
//! docstring for its layout), so a worker refuses bytes it does not understand instead of
//! misreading them.

use crate::errors::Invalid;

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_header(tag: &[u8; 3], version: u8) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(tag);
        buf.push(version);
        Writer { buf }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }
    pub fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }
    pub fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.len(v.len());
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.f64(x);
            }
        }
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values back, refusing truncated or malformed input.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader positioned after the header, which must be `tag` at `version`.
    pub fn with_header(
        data: &'a [u8],
        tag: &[u8; 3],
        version: u8,
        what: &'static str,
    ) -> Result<Self, Invalid> {
        if data.len() < 4 || &data[..3] != tag {
            return Err(Invalid(format!("not a {what} snapshot")));
        }
        if data[3] != version {
            return Err(Invalid(format!(
                "{what} snapshot format {} is not supported (this build reads {version})",
                data[3]
            )));
        }
        Ok(Reader { data, pos: 4, what })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let out = &self.data[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(Invalid(format!("{} snapshot is truncated", self.what))),
        }
    }
    pub fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }
    pub fn bool(&mut self) -> Result<bool, Invalid> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Invalid(format!("{} snapshot is malformed", self.what))),
        }
    }
    pub fn varint(&mut self) -> Result<u64, Invalid> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Invalid(format!("{} snapshot is malformed", self.what)))
    }
    /// A length prefix (not the reader's length: `len` mirrors `Writer::len`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&mut self) -> Result<usize, Invalid> {
        let n = self.varint()?;
        // A length can never exceed what is left: refuse before allocating for it.
        if n > (self.data.len() - self.pos) as u64 * 8 + 8 {
            return Err(Invalid(format!("{} snapshot is malformed", self.what)));
        }
        Ok(n as usize)
    }
    pub fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn f64(&mut self) -> Result<f64, Invalid> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn f32s(&mut self) -> Result<Vec<f32>, Invalid> {
        let n = self.len()?;
        let raw =
            self.take(n.checked_mul(4).ok_or_else(|| Invalid::new("snapshot is malformed"))?)?;
        Ok(raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }
    pub fn str(&mut self) -> Result<&'a str, Invalid> {
        let n = self.len()?;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map_err(|_| Invalid(format!("{} snapshot is malformed", self.what)))
    }
    pub fn opt_f64(&mut self) -> Result<Option<f64>, Invalid> {
        Ok(if self.bool()? { Some(self.f64()?) } else { None })
    }
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, Invalid> {
        Ok(if self.bool()? { Some(self.str()?) } else { None })
    }
    /// Fails unless every byte was read.
    pub fn end(self) -> Result<(), Invalid> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(Invalid(format!("{} snapshot has trailing bytes", self.what)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::with_header(b"TST", 1);
        w.varint(300);
        w.f64(-0.5);
        w.str("héllo");
        w.f32s(&[1.0, -2.5]);
        w.opt_f64(None);
        w.opt_str(Some("x"));
        w.bool(true);
        let bytes = w.finish();
        let mut r = Reader::with_header(&bytes, b"TST", 1, "test").unwrap();
        assert_eq!(r.varint().unwrap(), 300);
        assert_eq!(r.f64().unwrap(), -0.5);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.f32s().unwrap(), vec![1.0, -2.5]);
        assert_eq!(r.opt_f64().unwrap(), None);
        assert_eq!(r.opt_str().unwrap(), Some("x"));
        assert!(r.bool().unwrap());
        r.end().unwrap();
    }

    #[test]
    fn refuses_other_tags_versions_and_truncation() {
        let mut w = Writer::with_header(b"TST", 1);
        w.str("abc");
        let bytes = w.finish();
        assert!(Reader::with_header(&bytes, b"XXX", 1, "test").is_err());
        let err = Reader::with_header(&bytes, b"TST", 2, "test").err().unwrap();
        assert!(err.0.contains("format 1 is not supported"));
        let mut r = Reader::with_header(&bytes[..5], b"TST", 1, "test").unwrap();
        assert!(r.str().is_err());
    }
}

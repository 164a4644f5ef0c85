//! The runner protocol: length-prefixed frames over the Unix socket that
//! joins the server to one runner process.
//!
//! Every frame is `u32 length (LE)` + `u8 kind` + body. The server sends
//! `RUN` (tensors) and `RESET`; the runner answers `HELLO` once when its
//! engine is loaded, then `OUTPUTS` or `ERROR` for each request. Tensors are
//! raw little-endian elements, never JSON: a 1 MB input costs one copy.
//!
//! The runner runs a user's model, so the server treats what it sends as
//! untrusted: frames are capped, every tensor's byte length must match its
//! shape, and nothing is allocated before its size has been checked.

use std::io::{self, Read, Write};

use optimizer::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use shared::api::ModelSignature;

/// The largest frame either side accepts (a request or an answer). The
/// server's own body ceiling is far below it; an answer above it is the
/// runner misbehaving.
pub const MAX_FRAME: usize = 1 << 30;
/// Tensors in one frame, and dimensions of one tensor.
const MAX_TENSORS: usize = 4096;
const MAX_RANK: usize = 32;

pub const HELLO: u8 = b'H';
pub const RUN: u8 = b'R';
pub const RESET: u8 = b'Z';
pub const OUTPUTS: u8 = b'O';
pub const ERROR: u8 = b'E';
pub const DONE: u8 = b'D';

/// What a runner says once its engine is loaded (or could not be).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub signature: ModelSignature,
    /// How the runner is confined, for the service's status.
    pub sandbox: String,
}

/// Why a request failed in the runner: the caller's input (400) or the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadInput = 1,
    Engine = 2,
    Load = 3,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed runner frame: {0}")]
    Malformed(String),
}

fn malformed(s: impl Into<String>) -> WireError {
    WireError::Malformed(s.into())
}

pub fn write_frame(w: &mut impl Write, kind: u8, body: &[u8]) -> Result<(), WireError> {
    let len = body
        .len()
        .checked_add(1)
        .filter(|&n| n <= MAX_FRAME)
        .ok_or_else(|| malformed(format!("a frame of {} bytes is over the limit", body.len())))?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[4] = kind;
    w.write_all(&head)?;
    w.write_all(body)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame: `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u8, Vec<u8>)>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(malformed(format!("frame length {len}")));
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    // Read in steps rather than trusting the length with one allocation:
    // a frame that claims 1 GiB and stops early costs only what arrived.
    let mut body = Vec::with_capacity((len - 1).min(1 << 20));
    let got = r.by_ref().take((len - 1) as u64).read_to_end(&mut body)?;
    if got != len - 1 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "frame cut short").into());
    }
    Ok(Some((kind[0], body)))
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::F32 => 1,
        DType::F64 => 2,
        DType::I64 => 3,
        DType::I32 => 4,
        DType::I8 => 5,
        DType::U8 => 6,
        DType::Bool => 7,
    }
}

fn dtype_of(code: u8) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::F64,
        3 => DType::I64,
        4 => DType::I32,
        5 => DType::I8,
        6 => DType::U8,
        7 => DType::Bool,
        _ => return None,
    })
}

/// Named tensors as one frame body.
pub fn encode_tensors(tensors: &[(String, Tensor)]) -> Vec<u8> {
    let size: usize = tensors
        .iter()
        .map(|(n, t)| n.len() + 16 + t.shape.len() * 8 + t.numel() * t.dtype().size())
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for (name, t) in tensors {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(dtype_code(t.dtype()));
        out.push(t.shape.len() as u8);
        for &d in &t.shape {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        let start = out.len();
        out.extend_from_slice(&[0u8; 8]);
        let before = out.len();
        t.data.write_le(&mut out);
        let n = (out.len() - before) as u64;
        out[start..start + 8].copy_from_slice(&n.to_le_bytes());
    }
    out
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(malformed("body cut short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// The inverse of [`encode_tensors`], checking every length against the
/// shape before copying.
pub fn decode_tensors(body: &[u8]) -> Result<Vec<(String, Tensor)>, WireError> {
    let mut c = Cursor { buf: body };
    let n = c.u32()? as usize;
    if n > MAX_TENSORS {
        return Err(malformed(format!("{n} tensors")));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = c.u32()? as usize;
        let name = std::str::from_utf8(c.take(len)?)
            .map_err(|_| malformed("a tensor name is not UTF-8"))?
            .to_string();
        let dtype = dtype_of(c.u8()?).ok_or_else(|| malformed("unknown datatype"))?;
        let rank = c.u8()? as usize;
        if rank > MAX_RANK {
            return Err(malformed(format!("rank {rank}")));
        }
        let mut shape = Vec::with_capacity(rank);
        let mut numel: usize = 1;
        for _ in 0..rank {
            let d = usize::try_from(c.u64()?).map_err(|_| malformed("dimension"))?;
            numel = numel
                .checked_mul(d)
                .ok_or_else(|| malformed(format!("tensor '{name}' is too large")))?;
            shape.push(d);
        }
        let bytes = usize::try_from(c.u64()?).map_err(|_| malformed("length"))?;
        if numel.checked_mul(dtype.size()) != Some(bytes) {
            return Err(malformed(format!(
                "tensor '{name}': shape {shape:?} of {dtype} does not match {bytes} bytes"
            )));
        }
        let raw = c.take(bytes)?;
        let t = Tensor::from_le_bytes(dtype, shape, raw)
            .map_err(|e| malformed(format!("tensor '{name}': {e}")))?;
        out.push((name, t));
    }
    if !c.buf.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    Ok(out)
}

pub fn encode_error(kind: ErrorKind, message: &str) -> Vec<u8> {
    let mut out = vec![kind as u8];
    out.extend_from_slice(message.as_bytes());
    out
}

pub fn decode_error(body: &[u8]) -> (ErrorKind, String) {
    let kind = match body.first() {
        Some(1) => ErrorKind::BadInput,
        Some(3) => ErrorKind::Load,
        _ => ErrorKind::Engine,
    };
    // The message is shown to users: keep it bounded and printable.
    let text = String::from_utf8_lossy(body.get(1..).unwrap_or_default());
    let text: String = text.chars().take(4000).collect();
    (kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use optimizer::tensor::TensorData;

    #[test]
    fn tensors_round_trip_through_a_frame() {
        let ts = vec![
            (
                "x".to_string(),
                Tensor::new(
                    vec![2, 3],
                    TensorData::F32(vec![1.5, -2.0, 3.0, 4.0, 5.0, 6.0]),
                )
                .expect("tensor"),
            ),
            (
                "ids".to_string(),
                Tensor::new(vec![1, 2], TensorData::I64(vec![7, -9])).expect("tensor"),
            ),
            (
                "mask".to_string(),
                Tensor::new(vec![2], TensorData::Bool(vec![true, false])).expect("tensor"),
            ),
            (
                "empty".to_string(),
                Tensor::new(vec![0, 4], TensorData::U8(vec![])).expect("tensor"),
            ),
        ];
        let mut buf = Vec::new();
        write_frame(&mut buf, RUN, &encode_tensors(&ts)).expect("write");
        let (kind, body) = read_frame(&mut buf.as_slice())
            .expect("read")
            .expect("a frame");
        assert_eq!(kind, RUN);
        assert_eq!(decode_tensors(&body).expect("decode"), ts);
    }

    #[test]
    fn a_lying_length_or_shape_is_refused_without_allocating_it() {
        // A frame that claims 1 GiB - 1 and then ends.
        let mut buf = Vec::new();
        buf.extend_from_slice(&((MAX_FRAME) as u32).to_le_bytes());
        buf.push(OUTPUTS);
        buf.extend_from_slice(&[0u8; 16]);
        assert!(read_frame(&mut buf.as_slice()).is_err());
        let mut over = Vec::new();
        over.extend_from_slice(&((MAX_FRAME + 1) as u32).to_le_bytes());
        over.push(OUTPUTS);
        assert!(read_frame(&mut over.as_slice()).is_err());

        // A tensor whose shape claims 2^62 elements with 4 bytes of data.
        let t = Tensor::new(vec![1], TensorData::F32(vec![1.0])).expect("tensor");
        let mut body = encode_tensors(&[("y".into(), t)]);
        // name length (4) + name (1) + dtype (1) + rank (1) → first dim at 4+4+1+2.
        let dim_at = 4 + 4 + 1 + 2;
        body[dim_at..dim_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let e = decode_tensors(&body).expect_err("refused");
        assert!(e.to_string().contains("'y'"), "{e}");
    }
}

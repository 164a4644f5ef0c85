//! The `.npy` container: a magic string, a Python-literal header
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (10, 64), }`), then the
//! data: raw elements, or a pickle when `descr` is `|O` (object arrays, which is
//! what `np.save(path, list_of_feed_dicts)` writes).
//!
//! We parse the header ourselves rather than through `npyz`, which multiplies
//! the header's dimensions unchecked (a hostile header would panic) and does
//! not read object arrays; `.npz` members go through here too.

use std::path::Path;

use shared::api::ModelSignature;

use super::elem::{self, Budget};
use super::numpy::{self, NpType};
use super::{pickle, samples, Sample};
use crate::tensor::Tensor;

/// A parsed header and where the data begins.
pub(super) struct Npy<'a> {
    pub descr: String,
    pub fortran: bool,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

pub(super) fn parse(bytes: &[u8]) -> Result<Npy<'_>, String> {
    let not_npy = "not a .npy file (no \\x93NUMPY magic)";
    if bytes.get(..6) != Some(b"\x93NUMPY") {
        return Err(not_npy.into());
    }
    let (len, start): (Option<usize>, usize) = match bytes.get(6) {
        Some(1) => (
            bytes
                .get(8..10)
                .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))),
            10,
        ),
        Some(2 | 3) => (
            bytes
                .get(8..12)
                .and_then(|b| usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()),
            12,
        ),
        Some(v) => return Err(format!("unsupported .npy format version {v}")),
        None => return Err(not_npy.into()),
    };
    let header = len
        .and_then(|len| bytes.get(start..start.checked_add(len)?))
        .ok_or("the .npy header is cut short (is the file truncated?)")?;
    let data = &bytes[start + header.len()..];
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in Header::new(header).entries()? {
        match (key.as_str(), value) {
            ("descr", Lit::Str(s)) => descr = Some(s),
            ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
            ("shape", Lit::Dims(d)) => shape = Some(d),
            _ => {
                return Err(format!(
                    "unexpected .npy header entry '{}'",
                    key.escape_debug()
                ))
            }
        }
    }
    match (descr, fortran, shape) {
        (Some(descr), Some(fortran), Some(shape)) => Ok(Npy {
            descr,
            fortran,
            shape,
            data,
        }),
        _ => Err("the .npy header lacks descr, fortran_order or shape".into()),
    }
}

/// A numeric array (an `.npz` member or a plain `.npy`).
pub(super) fn numeric(npy: &Npy, budget: &mut Budget) -> Result<Tensor, String> {
    let (ty, order) = numpy::descr(&npy.descr)?;
    let NpType::Elem(elem) = ty else {
        return Err("holds Python objects (a pickle); expected a numeric array".into());
    };
    // Trailing bytes are tolerated (numpy never writes any); short data is not.
    let n = elem::numel(&npy.shape)?;
    let len = n.checked_mul(elem.size()).ok_or("the shape is too large")?;
    let data = npy.data.get(..len).ok_or_else(|| {
        format!(
            "the data has {} bytes, but shape {:?} of {} needs {len} (is the file truncated?)",
            npy.data.len(),
            npy.shape,
            elem::elem_name(elem)
        )
    })?;
    if npy.fortran {
        let strides = elem::f_strides(&npy.shape);
        elem::gather(elem, order, data, &npy.shape, &strides, 0, budget)
    } else {
        elem::contiguous(elem, order, data, &npy.shape, budget)
    }
}

/// A `.npy` data file: a pickled list of feed dicts, or one plain array that
/// feeds a single-input model with samples on axis 0.
pub(super) fn load(path: &Path, sig: &ModelSignature) -> Result<Vec<Sample>, String> {
    let bytes = super::read_file(path)?;
    let budget = &mut Budget::for_file(bytes.len());
    let npy = parse(&bytes)?;
    if numpy::descr(&npy.descr)?.0 == NpType::Object {
        let p = pickle::parse(npy.data)?;
        let items = numpy::object_array_items(&p, p.root())?;
        return samples::from_pickle(&p, items, sig, |v, spec| numpy::tensor(&p, v, spec, budget));
    }
    let t = numeric(&npy, budget)?;
    let [spec] = sig.inputs.as_slice() else {
        return Err(format!(
            "this .npy holds one plain array of shape {:?}, which can only feed a single-input \
             model, but the model has {} inputs; save a list of feed dicts with np.save, or use \
             .npz with one array per input",
            t.shape,
            sig.inputs.len()
        ));
    };
    samples::split_samples(vec![(spec, t)])
}

/// Values the `.npy` header uses.
enum Lit {
    Str(String),
    Bool(bool),
    Dims(Vec<usize>),
}

/// A reader for the header's Python dict literal: string keys, and string,
/// bool or int-tuple values. Structured dtypes (a list `descr`) are refused.
struct Header<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Header<'a> {
    fn new(s: &'a str) -> Self {
        Header {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn entries(mut self) -> Result<Vec<(String, Lit)>, String> {
        self.expect(b'{')?;
        let mut out = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(out);
            }
            let key = self.string()?;
            self.expect(b':')?;
            out.push((key, self.value()?));
            if !self.eat(b',') {
                self.expect(b'}')?;
                return Ok(out);
            }
        }
    }

    fn value(&mut self) -> Result<Lit, String> {
        self.skip_ws();
        match self.s.get(self.i) {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => self.dims().map(Lit::Dims),
            Some(b'[') => Err("structured arrays (a list descr) are not supported".into()),
            _ if self.word("True") => Ok(Lit::Bool(true)),
            _ if self.word("False") => Ok(Lit::Bool(false)),
            _ => Err(self.error()),
        }
    }

    fn dims(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            self.skip_ws();
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
            dims.push(digits.parse().map_err(|_| self.error())?);
            self.eat(b'L'); // Python 2 longs: (10L,)
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error()),
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(|| self.error())?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn error(&self) -> String {
        format!(
            "the .npy header is not a dict literal numpy writes (at header byte {})",
            self.i
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn headers_numpy_writes() {
        let b = npy(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }   \n",
            &[],
        );
        let h = parse(&b).unwrap();
        assert_eq!(
            (h.descr.as_str(), h.fortran, h.shape),
            ("<i4", false, vec![2, 3])
        );
        let b = npy("{'descr':'|b1','fortran_order':True,'shape':(5,)}", &[]);
        assert_eq!(parse(&b).unwrap().shape, vec![5]);
        let b = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
            &[],
        );
        assert_eq!(parse(&b).unwrap().shape, Vec::<usize>::new());
    }

    #[test]
    fn plain_arrays_decode_and_bad_headers_are_errors() {
        let data: Vec<u8> = [1i64, 2, 3, 4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b = npy(
            "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2), }",
            &data,
        );
        let t = numeric(&parse(&b).unwrap(), &mut Budget::for_file(0)).unwrap();
        assert_eq!(t.data, TensorData::I64(vec![1, 3, 2, 4]));

        let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }";
        let b = npy(huge, &[0; 16]);
        assert!(numeric(&parse(&b).unwrap(), &mut Budget::for_file(0)).is_err());
        for header in [
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
            "{'descr': '<f4",
            "",
        ] {
            assert!(parse(&npy(header, &[])).is_err(), "{header}");
        }
        let full = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        for n in 0..full.len() {
            let ok = parse(&full[..n]).and_then(|h| numeric(&h, &mut Budget::for_file(0)));
            assert!(ok.is_err(), "prefix {n}");
        }
    }
}

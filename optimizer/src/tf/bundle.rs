//! TensorFlow checkpoint bundles: a SavedModel's `variables/` folder.
//!
//! `variables.index` is a table in LevelDB's sorted-table format (read by
//! [`read_table`]): the entry with the empty key holds a `BundleHeaderProto`
//! (shard count, byte order), every other entry maps a
//! checkpoint key (`dense/kernel`, `layer_with_weights-0/kernel/.ATTRIBUTES/
//! VARIABLE_VALUE`) to a `BundleEntryProto`: the tensor's type, shape, shard
//! and byte range. The bytes themselves are in `variables.data-NNNNN-of-MMMMM`.
//!
//! The files are the user's: the index is read whole only below a size
//! bound, a malformed table is an error, and every tensor's range is checked
//! against its type, shape and shard's size before a byte of it is read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost::Message;

use super::konst;
use super::proto::{dt, BundleEntryProto, BundleHeaderProto, TensorProto};

/// The largest `variables.index` read: it holds one small entry per
/// variable, so even models with hundreds of thousands of variables stay far
/// below this.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// The most shards a bundle may declare.
const MAX_SHARDS: i32 = 1 << 16;
/// The largest string tensor read (the checkpoint's object graph).
const MAX_STRING_TENSOR_BYTES: u64 = 256 << 20;

/// An opened bundle: its entries, read from the index, and its shard files.
#[derive(Debug)]
pub(crate) struct Bundle {
    dir: PathBuf,
    entries: HashMap<String, BundleEntryProto>,
    num_shards: i32,
}

fn bad(dir: &Path, what: impl std::fmt::Display) -> String {
    format!("{}: {what}", dir.join("variables.index").display())
}

impl Bundle {
    /// Reads `dir/variables.index` (dir: the SavedModel's `variables/`).
    pub fn open(dir: &Path) -> Result<Bundle, String> {
        let index = dir.join("variables.index");
        let len = std::fs::metadata(&index)
            .map_err(|e| {
                format!(
                    "{}: cannot read the checkpoint index the SavedModel's variables need \
                     (deploy the whole SavedModel folder, with its variables/): {e}",
                    index.display()
                )
            })?
            .len();
        if len > MAX_INDEX_BYTES {
            return Err(bad(
                dir,
                format!(
                    "{len} bytes, over the {MAX_INDEX_BYTES}-byte limit for a checkpoint index"
                ),
            ));
        }
        let bytes = std::fs::read(&index).map_err(|e| bad(dir, e))?;
        let pairs = read_table(&bytes).map_err(|e| bad(dir, e))?;
        let mut header = None;
        let mut entries = HashMap::new();
        for (key, value) in pairs {
            if key.is_empty() {
                let h = BundleHeaderProto::decode(value.as_slice()).map_err(|e| {
                    bad(dir, format!("the header entry is not a bundle header: {e}"))
                })?;
                header = Some(h);
                continue;
            }
            let key =
                String::from_utf8(key).map_err(|_| bad(dir, "a checkpoint key is not UTF-8"))?;
            let entry = BundleEntryProto::decode(value.as_slice())
                .map_err(|e| bad(dir, format!("entry '{key}' is not a bundle entry: {e}")))?;
            entries.insert(key, entry);
        }
        let header = header
            .ok_or_else(|| bad(dir, "no header entry (not a TensorFlow checkpoint index)"))?;
        if header.endianness != 0 {
            return Err(bad(
                dir,
                "the checkpoint was written big-endian; only little-endian checkpoints are read",
            ));
        }
        if !(1..=MAX_SHARDS).contains(&header.num_shards) {
            return Err(bad(
                dir,
                format!(
                    "the header declares {} shards (expected 1 to {MAX_SHARDS})",
                    header.num_shards
                ),
            ));
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            entries,
            num_shards: header.num_shards,
        })
    }

    fn shard(&self, id: i32) -> PathBuf {
        self.dir
            .join(format!("variables.data-{id:05}-of-{:05}", self.num_shards))
    }

    /// The `len` bytes `e` points at, checked against its shard's size
    /// before they are read.
    fn read_range(
        &self,
        e: &BundleEntryProto,
        len: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, String> {
        if !(0..self.num_shards).contains(&e.shard_id) {
            return Err(format!(
                "{}: its entry names shard {} of a {}-shard checkpoint",
                what(),
                e.shard_id,
                self.num_shards
            ));
        }
        let shard = self.shard(e.shard_id);
        let file =
            File::open(&shard).map_err(|err| format!("{}: {}: {err}", what(), shard.display()))?;
        let shard_len = file
            .metadata()
            .map_err(|err| format!("{}: {}: {err}", what(), shard.display()))?
            .len();
        let offset = u64::try_from(e.offset).map_err(|_| {
            format!(
                "{}: its entry points outside its shard (offset {})",
                what(),
                e.offset
            )
        })?;
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > shard_len) {
            return Err(format!(
                "{}: its entry points outside its shard: bytes {offset}..{} of {}, which holds {shard_len}",
                what(),
                offset.saturating_add(len as u64),
                shard.display()
            ));
        }
        let mut content = vec![0u8; len];
        file.read_exact_at(&mut content, offset)
            .map_err(|err| format!("{}: {}: {err}", what(), shard.display()))?;
        Ok(content)
    }

    /// The tensor stored under `key`, as a Const's TensorProto. `var` names
    /// the graph's variable in errors. The entry's byte range is checked
    /// against its type and shape, and against its shard's size, before it
    /// is read.
    pub fn tensor(&self, key: &str, var: &str) -> Result<TensorProto, String> {
        let what = || format!("variable '{var}' (checkpoint key '{key}')");
        let e = self
            .entries
            .get(key)
            .ok_or_else(|| format!("{}: not in the checkpoint {}", what(), self.dir.display()))?;
        if !e.slices.is_empty() {
            return Err(format!(
                "{}: a partitioned variable (stored in slices), which is not supported; \
                 save the model without variable partitioning",
                what()
            ));
        }
        if e.dtype == dt::STRING {
            return Err(format!(
                "{}: a string variable, which is not supported",
                what()
            ));
        }
        // The declared type and shape fix the byte count (and refuse an
        // overflowing or oversized shape) before the range is looked at.
        let declared = TensorProto {
            dtype: e.dtype,
            tensor_shape: e.shape.clone(),
            ..Default::default()
        };
        let layout = konst::layout(&declared).map_err(|m| format!("{}: {m}", what()))?;
        if u64::try_from(e.size).ok() != Some(layout.bytes as u64) {
            return Err(format!(
                "{}: its entry says {} bytes, but a {} tensor of shape {:?} takes {}",
                what(),
                e.size,
                dt::name(e.dtype),
                layout.shape,
                layout.bytes
            ));
        }
        let content = self.read_range(e, layout.bytes, &what)?;
        if mask(crc32c(&content)) != e.crc32c {
            return Err(damaged(&what()));
        }
        Ok(TensorProto {
            dtype: e.dtype,
            tensor_shape: e.shape.clone(),
            tensor_content: content,
            ..Default::default()
        })
    }
}

impl Bundle {
    /// A string scalar (the checkpoint's `_CHECKPOINTABLE_OBJECT_GRAPH`),
    /// or `None` if the checkpoint has no such entry. A string tensor is
    /// stored as its elements' lengths (varints), a CRC of those, then the
    /// bytes.
    pub fn string_scalar(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(e) = self.entries.get(key) else {
            return Ok(None);
        };
        let what = || format!("checkpoint entry '{key}'");
        if e.dtype != dt::STRING || e.shape.as_ref().is_some_and(|s| !s.dim.is_empty()) {
            return Err(format!("{}: expected a string scalar", what()));
        }
        let size = u64::try_from(e.size).unwrap_or(u64::MAX);
        if size > MAX_STRING_TENSOR_BYTES {
            return Err(format!(
                "{}: {} bytes, over the {MAX_STRING_TENSOR_BYTES}-byte limit",
                what(),
                e.size
            ));
        }
        let bytes = self.read_range(e, size as usize, &what)?;
        // One varint length, four bytes of CRC, the string.
        let mut at = 0;
        let len = varint(&bytes, &mut at).map_err(|e| format!("{}: {e}", what()))?;
        let start = at + 4;
        let end = u64::try_from(start).ok().and_then(|s| s.checked_add(len));
        if end != Some(bytes.len() as u64) {
            return Err(format!(
                "{}: the string's length {len} does not match the entry's {} bytes",
                what(),
                bytes.len()
            ));
        }
        // TensorFlow's checksum of a string tensor covers each length as a
        // little-endian u32 (u64 past 4 GiB), the lengths' checksum, then
        // the bytes.
        let mut digest = CASTAGNOLI.digest();
        match u32::try_from(len) {
            Ok(l) => digest.update(&l.to_le_bytes()),
            Err(_) => digest.update(&len.to_le_bytes()),
        }
        digest.update(&bytes[at..]);
        if mask(digest.finalize()) != e.crc32c {
            return Err(damaged(&what()));
        }
        Ok(Some(bytes[start..].to_vec()))
    }
}

/// A table's entries: keys and values.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The last 48 bytes of a table: the metaindex and index block handles,
/// padding, and the magic number.
const FOOTER: usize = 48;
const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Every block is followed by its compression type (1 byte) and a masked
/// CRC-32C of the block and that byte (4 bytes).
const BLOCK_TRAILER: usize = 5;

/// Every key and value of a sorted table (LevelDB's format, which
/// TensorFlow's table writer keeps) held in memory.
///
/// Read here rather than with a table crate: the one on crates.io
/// (`sstable` 0.11) aborts the process with a stack overflow on a damaged
/// block (its iterator retries the next block recursively), panics on a
/// malformed length, and cannot return an entry whose key is empty (the
/// bundle's header). This reader bounds-checks every offset and length,
/// verifies every block's checksum, and reports what is wrong instead.
fn read_table(file: &[u8]) -> Result<Entries, String> {
    if file.len() < FOOTER {
        return Err(format!(
            "{} bytes, too short for a table (not a TensorFlow checkpoint index)",
            file.len()
        ));
    }
    let footer = &file[file.len() - FOOTER..];
    let magic = u64::from_le_bytes(footer[40..].try_into().map_err(|_| "short footer")?);
    if magic != TABLE_MAGIC {
        return Err("no table footer (not a TensorFlow checkpoint index)".into());
    }
    let mut at = 0;
    let _metaindex = handle(footer, &mut at)?;
    let index = handle(footer, &mut at)?;
    let mut out = Vec::new();
    for (_, h) in block_entries(block(file, index)?)? {
        let mut at = 0;
        let data = handle(&h, &mut at)?;
        out.extend(block_entries(block(file, data)?)?);
    }
    Ok(out)
}

/// A block handle: offset and size, two varints.
fn handle(bytes: &[u8], at: &mut usize) -> Result<(u64, u64), String> {
    Ok((varint(bytes, at)?, varint(bytes, at)?))
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("a truncated length")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a malformed length".into())
}

/// The contents of the block at `(offset, size)`, its checksum verified.
fn block(file: &[u8], (offset, size): (u64, u64)) -> Result<&[u8], String> {
    let range = usize::try_from(offset).ok().and_then(|o| {
        let end = o.checked_add(usize::try_from(size).ok()?)?;
        (end.checked_add(BLOCK_TRAILER)? <= file.len()).then_some(o..end)
    });
    let Some(range) = range else {
        return Err(format!(
            "a block at {offset} of {size} bytes lies outside the file's {} bytes",
            file.len()
        ));
    };
    let end = range.end;
    let (kind, stored) = (file[end], &file[end + 1..end + BLOCK_TRAILER]);
    let stored = u32::from_le_bytes(stored.try_into().map_err(|_| "short trailer")?);
    let mut digest = CASTAGNOLI.digest();
    digest.update(&file[range.clone()]);
    digest.update(&[kind]);
    if mask(digest.finalize()) != stored {
        return Err(format!(
            "the block at {offset} fails its checksum (a damaged file)"
        ));
    }
    if kind != 0 {
        return Err(format!(
            "the block at {offset} is compressed (type {kind}); TensorFlow writes checkpoint \
             indexes uncompressed, and only those are read"
        ));
    }
    Ok(&file[range])
}

/// A block's entries: each key shares a prefix with the one before it; the
/// block ends with its restart offsets and their count.
fn block_entries(b: &[u8]) -> Result<Entries, String> {
    let count_at = b
        .len()
        .checked_sub(4)
        .ok_or("a block too short for its restart count")?;
    let restarts =
        u32::from_le_bytes(b[count_at..].try_into().map_err(|_| "short block")?) as usize;
    let end = restarts
        .checked_mul(4)
        .and_then(|r| count_at.checked_sub(r))
        .ok_or("a block whose restart count exceeds its size")?;
    let mut out: Entries = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < end {
        let shared = varint(b, &mut at)? as usize;
        let unshared = varint(b, &mut at)? as usize;
        let value_len = varint(b, &mut at)? as usize;
        let key_end = at.checked_add(unshared).filter(|&e| e <= end);
        let value_end = key_end
            .and_then(|k| k.checked_add(value_len))
            .filter(|&e| e <= end);
        let (Some(key_end), Some(value_end)) = (key_end, value_end) else {
            return Err("an entry runs past the end of its block".into());
        };
        if shared > key.len() {
            return Err("an entry shares more of the previous key than it has".into());
        }
        key.truncate(shared);
        key.extend_from_slice(&b[at..key_end]);
        out.push((key.clone(), b[key_end..value_end].to_vec()));
        at = value_end;
    }
    Ok(out)
}

fn damaged(what: &str) -> String {
    format!("{what}: its bytes do not match the checksum the index stores (a damaged checkpoint)")
}

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn crc32c(data: &[u8]) -> u32 {
    CASTAGNOLI.checksum(data)
}

/// A CRC-32C as TensorFlow stores it: rotated and offset ("masked"), so
/// that a CRC of data containing CRCs stays well distributed.
fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tf::proto::TensorShapeProto;

    /// A table as TensorFlow writes one: one data block (no prefix
    /// sharing, one restart), the index block, an empty metaindex, footer.
    fn table(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        fn put_varint(out: &mut Vec<u8>, mut v: u64) {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        fn put_block(file: &mut Vec<u8>, entries: &[(Vec<u8>, Vec<u8>)]) -> (u64, u64) {
            let mut b = Vec::new();
            for (k, v) in entries {
                put_varint(&mut b, 0);
                put_varint(&mut b, k.len() as u64);
                put_varint(&mut b, v.len() as u64);
                b.extend(k);
                b.extend(v);
            }
            b.extend(0u32.to_le_bytes());
            b.extend(1u32.to_le_bytes());
            let at = (file.len() as u64, b.len() as u64);
            let mut digest = CASTAGNOLI.digest();
            digest.update(&b);
            digest.update(&[0]);
            file.extend(&b);
            file.push(0);
            file.extend(mask(digest.finalize()).to_le_bytes());
            at
        }
        let mut file = Vec::new();
        let data = put_block(&mut file, entries);
        let mut h = Vec::new();
        put_varint(&mut h, data.0);
        put_varint(&mut h, data.1);
        let index = put_block(&mut file, &[(b"\xff".to_vec(), h)]);
        let meta = put_block(&mut file, &[]);
        let mut footer = Vec::new();
        for v in [meta.0, meta.1, index.0, index.1] {
            put_varint(&mut footer, v);
        }
        footer.resize(40, 0);
        footer.extend(TABLE_MAGIC.to_le_bytes());
        file.extend(footer);
        file
    }

    /// A bundle folder: an index with a header and `entries`, and one shard
    /// holding `shard`.
    fn bundle(entries: &[(&str, BundleEntryProto)], shard: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let header = BundleHeaderProto {
            num_shards: 1,
            ..Default::default()
        };
        let mut rows = vec![(Vec::new(), header.encode_to_vec())];
        let mut sorted: Vec<_> = entries.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        rows.extend(
            sorted
                .into_iter()
                .map(|(k, e)| (k.as_bytes().to_vec(), e.encode_to_vec())),
        );
        std::fs::write(dir.path().join("variables.index"), table(&rows)).unwrap();
        std::fs::write(dir.path().join("variables.data-00000-of-00001"), shard).unwrap();
        dir
    }

    fn f32_entry(dims: &[i64], offset: i64, bytes: &[u8]) -> BundleEntryProto {
        BundleEntryProto {
            dtype: dt::FLOAT,
            shape: Some(TensorShapeProto::of(dims)),
            offset,
            size: bytes.len() as i64,
            crc32c: mask(crc32c(bytes)),
            ..Default::default()
        }
    }

    fn le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn a_tensor_is_read_from_its_range_of_the_shard() {
        let w = le(&[1.0, 2.0, 3.0, 4.0]);
        let mut shard = vec![9u8; 4];
        shard.extend(&w);
        let dir = bundle(&[("dense/kernel", f32_entry(&[2, 2], 4, &w))], &shard);
        let t = Bundle::open(dir.path())
            .unwrap()
            .tensor("dense/kernel", "kernel")
            .unwrap();
        assert_eq!(t.tensor_content, w);
        assert_eq!(t.tensor_shape.unwrap().dim.len(), 2);
    }

    #[test]
    fn an_entry_pointing_outside_its_shard_is_refused_naming_the_variable() {
        let w = le(&[1.0, 2.0, 3.0, 4.0]);
        // The shard holds 8 bytes; the entry asks for 16 from offset 0, and
        // another for 16 from an offset that overflows when added to.
        let dir = bundle(
            &[
                ("a", f32_entry(&[4], 0, &w)),
                ("b", f32_entry(&[4], i64::MAX - 3, &w)),
                ("c", f32_entry(&[4], -8, &w)),
            ],
            &w[..8],
        );
        let b = Bundle::open(dir.path()).unwrap();
        for (key, var) in [
            ("a", "dense/kernel"),
            ("b", "dense/bias"),
            ("c", "out/kernel"),
        ] {
            let e = b.tensor(key, var).unwrap_err();
            assert!(e.contains(&format!("variable '{var}'")), "{e}");
            assert!(e.contains("points outside its shard"), "{e}");
        }
    }

    #[test]
    fn a_size_that_disagrees_with_the_shape_or_a_bad_checksum_is_refused() {
        let w = le(&[1.0, 2.0, 3.0, 4.0]);
        let mut wrong_size = f32_entry(&[3], 0, &w);
        wrong_size.size = 16;
        let mut huge = f32_entry(&[1 << 40, 1 << 40], 0, &w);
        huge.size = 16;
        let mut damaged = f32_entry(&[4], 0, &w);
        damaged.crc32c ^= 1;
        let dir = bundle(&[("s", wrong_size), ("h", huge), ("d", damaged)], &w);
        let b = Bundle::open(dir.path()).unwrap();
        let e = b.tensor("s", "v").unwrap_err();
        assert!(e.contains("says 16 bytes") && e.contains("takes 12"), "{e}");
        let e = b.tensor("h", "v").unwrap_err();
        assert!(e.contains("variable 'v'"), "{e}");
        let e = b.tensor("d", "v").unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        let e = b.tensor("missing", "v").unwrap_err();
        assert!(e.contains("not in the checkpoint"), "{e}");
    }

    #[test]
    fn a_damaged_or_foreign_index_is_an_error_not_a_panic() {
        let w = le(&[1.0, 2.0]);
        let dir = bundle(&[("a", f32_entry(&[2], 0, &w))], &w);
        let index = dir.path().join("variables.index");
        let good = std::fs::read(&index).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            b"not a table".to_vec(),
            vec![0u8; 100],
            good[..good.len() - 1].to_vec(),
            good[good.len() / 2..].to_vec(),
        ];
        // Every byte of the good index flipped in turn: a damaged table is
        // refused (or, where the byte is padding, still read); never a panic.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            cases.push(bad);
        }
        for bytes in cases {
            std::fs::write(&index, &bytes).unwrap();
            if let Ok(b) = Bundle::open(dir.path()) {
                let _ = b.tensor("a", "v");
            }
        }
        std::fs::write(&index, &good).unwrap();
        std::fs::remove_file(dir.path().join("variables.data-00000-of-00001")).unwrap();
        let e = Bundle::open(dir.path())
            .unwrap()
            .tensor("a", "v")
            .unwrap_err();
        assert!(
            e.contains("variable 'v'") && e.contains("variables.data-00000-of-00001"),
            "{e}"
        );
    }
}

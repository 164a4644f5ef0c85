//! Resolving a config's `model_path` to a model file on this machine, and
//! unpacking archives safely (no path escapes, no links, bounded size).
//!
//! Everything here is blocking file work: call it from `spawn_blocking`.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use shared::api::ModelSignature;
use shared::ServiceConfig;

use crate::control::store::ResolvedModel;
use crate::control::Settings;
use crate::deploy::inspect::{InspectKind, InspectRequest};
use crate::deploy::DeployError;

const ARCHIVE_EXTS: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".zip"];
const MAX_ENTRIES: usize = 100_000;

/// The largest GNU long-name ('L') or long-link ('K') record, PAX record
/// ('x', 'g') or GNU sparse map accepted in a tar archive. The `tar` crate
/// reads these whole into memory before our code sees the entry they
/// describe, so they are checked on the raw headers first. They hold a path
/// (PATH_MAX is 4 KiB) or a few attributes: 64 KiB is far above any real
/// one and nothing to hold.
const MAX_TAR_RECORD: u64 = 64 << 10;

/// Header blocks, padding and the records above over a whole tar archive.
/// An entry with both a PAX record and a long name costs about 2.5 KiB, so
/// this covers MAX_ENTRIES of them; with the size limit it bounds how much
/// of a tar stream is read at all.
const MAX_TAR_OVERHEAD: u64 = 256 << 20;

/// A compressed archive may expand to RATIO_FREE_BYTES whatever its size,
/// and beyond that to at most MAX_RATIO times its compressed size. Model
/// weights barely compress (float data about 1.1:1, quantised or pruned
/// ones a few times), so 200:1 takes long runs of one byte: the shape of a
/// decompression bomb, which would otherwise cost up to the size limit in
/// CPU and disk for a few MB uploaded. A model that really is that regular
/// can be uploaded as a plain .tar, which is not compressed.
const RATIO_FREE_BYTES: u64 = 16 << 20;
const MAX_RATIO: u64 = 200;

/// The bounds on unpacking one archive (a struct so tests can shrink them).
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Bytes of files unpacked, in all; sparse files count expanded.
    max_bytes: u64,
    /// MAX_TAR_RECORD.
    record: u64,
    /// MAX_TAR_OVERHEAD.
    overhead: u64,
    /// MAX_RATIO.
    ratio: u64,
    /// RATIO_FREE_BYTES.
    ratio_free: u64,
}

impl Limits {
    fn new(max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            record: MAX_TAR_RECORD,
            overhead: MAX_TAR_OVERHEAD,
            ratio: MAX_RATIO,
            ratio_free: RATIO_FREE_BYTES,
        }
    }

    /// The most that `compressed` bytes may expand to.
    fn expansion(&self, compressed: u64) -> u64 {
        self.ratio_free
            .saturating_add(self.ratio.saturating_mul(compressed))
    }

    fn ratio_hint(&self) -> String {
        format!(
            "more than {}:1 beyond the first {} MiB is refused as a likely decompression bomb; upload a model that compresses this well as a plain .tar",
            self.ratio,
            self.ratio_free >> 20
        )
    }
}

pub fn is_archive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ARCHIVE_EXTS.iter().any(|e| n.ends_with(e))
}

/// A relative path whose every component is a plain name.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks `archive` into a fresh folder `dest` (which must not exist).
/// On any problem nothing is left behind and the error names the entry.
pub fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), String> {
    unpack_with(archive, dest, &Limits::new(max_bytes))
}

fn unpack_with(archive: &Path, dest: &Path, limits: &Limits) -> Result<(), String> {
    // A folder of this unpack's own: two unpacks of one archive at once
    // (two uploads of the same model) must not share one.
    let tmp = dest.with_extension(format!(
        "tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let result = unpack_into(archive, &tmp, limits).and_then(|()| {
        std::fs::rename(&tmp, dest).map_err(|e| format!("moving unpacked model into place: {e}"))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Counts what a tar stream yields and fails once it passes either bound,
/// so a bomb costs at most that much work whatever its headers claim. The
/// checks in `scan_tar` come first with better messages; this holds even
/// where they would not.
struct Bounded<R> {
    inner: R,
    read: u64,
    /// The files' limit plus the tar overhead and the two end blocks: all a
    /// tar stream within the limits can hold.
    max: u64,
    /// `Limits::expansion` of the compressed file (unbounded when the file
    /// is not compressed).
    ratio_max: u64,
    compressed: u64,
    ratio_hint: String,
}

impl<R: Read> Bounded<R> {
    fn new(inner: R, limits: &Limits, compressed: Option<u64>) -> Bounded<R> {
        Bounded {
            inner,
            read: 0,
            max: limits
                .max_bytes
                .saturating_add(limits.overhead)
                .saturating_add(1024),
            ratio_max: compressed.map_or(u64::MAX, |c| limits.expansion(c)),
            compressed: compressed.unwrap_or(0),
            ratio_hint: limits.ratio_hint(),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.max {
            return Err(io::Error::other(format!(
                "the archive decompresses to more than {} bytes, the model size limit plus tar headers",
                self.max
            )));
        }
        if self.read > self.ratio_max {
            return Err(io::Error::other(format!(
                "the {} compressed bytes decompress to more than {} ({})",
                self.compressed, self.ratio_max, self.ratio_hint
            )));
        }
        Ok(n)
    }
}

/// A tar archive's stream, decompressed when `gzip`, within `Bounded`.
fn tar_stream(archive: &Path, gzip: bool, limits: &Limits) -> Result<Box<dyn Read>, String> {
    let file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", archive.display()))?
        .len();
    Ok(if gzip {
        let gz = flate2::read::GzDecoder::new(BufReader::new(file));
        Box::new(Bounded::new(gz, limits, Some(len)))
    } else {
        Box::new(Bounded::new(BufReader::new(file), limits, None))
    })
}

/// Fills `buf` from `r`: false at a clean end before the first byte, an
/// error at an end inside it (the `tar` crate's rule for header blocks).
fn read_block(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive ends inside a header block",
                ))
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads past `n` bytes of `name`'s data without keeping them.
fn skip(r: &mut dyn Read, n: u64, name: &str) -> Result<(), String> {
    let skipped = io::copy(&mut r.take(n), &mut io::sink())
        .map_err(|e| format!("archive entry '{name}': {e}"))?;
    if skipped < n {
        return Err(format!(
            "the archive ends inside entry '{name}' ({skipped} of {n} bytes present)"
        ));
    }
    Ok(())
}

/// A PAX record's value for `key` as the `tar` crate finds it: the first
/// well-formed record with that key; a malformed record ends the search.
fn pax_value<'a>(records: &'a [u8], key: &str) -> Option<&'a [u8]> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() == Ok(key) {
            return Some(ext.value_bytes());
        }
    }
    None
}

/// The PAX `size` that overrides the next entry's header, as the `tar`
/// crate parses it (a value that is not a number is ignored).
fn pax_size(records: &[u8]) -> Option<u64> {
    std::str::from_utf8(pax_value(records, "size")?)
        .ok()?
        .parse()
        .ok()
}

fn record_kind(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::GNULongName => "GNU long-name record",
        tar::EntryType::GNULongLink => "GNU long-link record",
        tar::EntryType::XHeader => "PAX record",
        _ => "PAX global record",
    }
}

/// The first pass over a tar stream: walks the raw 512-byte headers the way
/// the `tar` crate (0.4) frames them, and checks every bound before any data
/// is read, so the crate's second pass can only see what fits.
///
/// The framing followed: GNU long-name/long-link and PAX records of a
/// GNU or ustar header attach to the next entry (one of each at most); a
/// PAX `size` overrides the next entry's header size; a GNU sparse header is
/// followed by its extension blocks, then its stored data; data is padded to
/// 512 bytes; the archive ends at a zero block or at EOF between blocks.
/// The bounds: records no larger than `limits.record`; files no more than
/// `limits.max_bytes` in all (sparse ones expanded); headers, records and
/// padding no more than `limits.overhead`. Data is skipped without being
/// kept. Returns where each entry the crate will yield has its header, for
/// the second pass to check it frames the archive the same way.
fn scan_tar(stream: &mut dyn Read, limits: &Limits) -> Result<Vec<u64>, String> {
    use tar::EntryType;
    let mut pos = 0u64;
    let mut positions = Vec::new();
    let mut files = 0u64;
    let mut overhead = 0u64;
    // What the records read so far say about the next entry.
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link = false;
    let mut pax: Option<Vec<u8>> = None;
    // The last entry seen, to place errors between entries.
    let mut last: Option<String> = None;
    let mut block = [0u8; 512];
    loop {
        let at = pos;
        let place = match &last {
            None => "at its start".to_string(),
            Some(n) => format!("after entry '{n}'"),
        };
        let more = read_block(stream, &mut block)
            .map_err(|e| format!("reading the tar archive {place}: {e}"))?;
        if !more || block.iter().all(|&b| b == 0) {
            if long_name.is_some() || long_link || pax.is_some() {
                return Err(format!(
                    "the tar archive ends {place} with a long-name or PAX record that describes no entry"
                ));
            }
            return Ok(positions);
        }
        pos += 512;
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&block);
        let own = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        // The crate's rule: the checksum field itself counts as spaces.
        let sum = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if header.cksum().ok() != Some(sum) {
            return Err(format!(
                "archive entry '{own}' (byte {at}) has a bad header checksum; the archive is damaged"
            ));
        }
        let kind = header.entry_type();
        let record = matches!(
            kind,
            EntryType::GNULongName
                | EntryType::GNULongLink
                | EntryType::XHeader
                | EntryType::XGlobalHeader
        );
        let mut size = header
            .entry_size()
            .map_err(|e| format!("archive entry '{own}': {e}"))?;
        if !record {
            if let Some(s) = pax.as_deref().and_then(pax_size) {
                size = s;
            }
        }
        if record && size > limits.record {
            return Err(format!(
                "archive entry '{own}' is a {} of {size} bytes; such records hold a path or a few attributes, and at most {} bytes are accepted",
                record_kind(kind),
                limits.record
            ));
        }
        let padded = size
            .checked_add(511)
            .map(|s| s & !511)
            .ok_or_else(|| format!("archive entry '{own}' claims an impossible size {size}"))?;
        overhead = overhead.saturating_add(512);
        let recognised = header.as_gnu().is_some() || header.as_ustar().is_some();
        if recognised
            && matches!(
                kind,
                EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader
            )
        {
            overhead = overhead.saturating_add(padded);
            if overhead > limits.overhead {
                return Err(format!(
                    "archive entry '{own}': the archive has more than {} bytes of tar headers and records",
                    limits.overhead
                ));
            }
            // Read whole, as the crate will: within `limits.record`.
            let mut data = vec![0u8; size as usize];
            stream
                .read_exact(&mut data)
                .map_err(|e| format!("archive entry '{own}': {e}"))?;
            skip(stream, padded - size, &own)?;
            pos += padded;
            let twice = match kind {
                EntryType::GNULongName => long_name.replace(data).is_some(),
                EntryType::GNULongLink => std::mem::replace(&mut long_link, true),
                _ => pax.replace(data).is_some(),
            };
            if twice {
                return Err(format!(
                    "archive entry '{own}': two {}s describe the same entry",
                    record_kind(kind)
                ));
            }
            continue;
        }

        // An entry the crate yields, named as it will name it.
        let name = match (
            &long_name,
            pax.as_deref().and_then(|p| pax_value(p, "path")),
        ) {
            (Some(n), _) => {
                String::from_utf8_lossy(n.strip_suffix(b"\0").unwrap_or(n)).into_owned()
            }
            (None, Some(p)) => String::from_utf8_lossy(p).into_owned(),
            (None, None) => own,
        };
        // GNU tar's PAX sparse formats (`--format=pax --sparse`) keep the
        // map in PAX records and the data: the `tar` crate would unpack the
        // map as file content under a `GNUSparseFile.N/` name.
        let pax_sparse = pax.as_deref().is_some_and(|p| {
            tar::PaxExtensions::new(p)
                .map_while(Result::ok)
                .any(|e| e.key_bytes().starts_with(b"GNU.sparse."))
        });
        if pax_sparse {
            return Err(format!(
                "archive entry '{name}' is a PAX-format sparse file, which is not supported; pack it without --sparse (or with --format=gnu)"
            ));
        }
        positions.push(at);
        if positions.len() > MAX_ENTRIES {
            return Err(format!("archive has more than {MAX_ENTRIES} entries"));
        }
        let mut expanded = size;
        if kind == EntryType::GNUSparse {
            let Some(gnu) = header.as_gnu() else {
                return Err(format!(
                    "archive entry '{name}' is marked sparse but has no GNU header"
                ));
            };
            expanded = gnu
                .real_size()
                .map_err(|e| format!("archive entry '{name}': {e}"))?;
            // The sparse map goes on in extension blocks, which the crate
            // keeps in memory: bounded like a record.
            let mut extended = gnu.is_extended();
            let mut map = 0u64;
            while extended {
                map += 512;
                if map > limits.record {
                    return Err(format!(
                        "archive entry '{name}' has a sparse map of more than {} bytes",
                        limits.record
                    ));
                }
                let mut ext = tar::GnuExtSparseHeader::new();
                if !read_block(stream, ext.as_mut_bytes())
                    .map_err(|e| format!("archive entry '{name}': {e}"))?
                {
                    return Err(format!(
                        "the archive ends inside the sparse map of entry '{name}'"
                    ));
                }
                pos += 512;
                overhead = overhead.saturating_add(512);
                extended = ext.is_extended();
            }
        }
        if record {
            overhead = overhead.saturating_add(padded);
        } else {
            files = files.saturating_add(expanded.max(size));
            if files > limits.max_bytes {
                return Err(format!(
                    "archive unpacks to more than the limit of {} bytes (entry '{name}' holds {} bytes)",
                    limits.max_bytes,
                    expanded.max(size)
                ));
            }
            overhead = overhead.saturating_add(padded - size);
        }
        if overhead > limits.overhead {
            return Err(format!(
                "archive entry '{name}': the archive has more than {} bytes of tar headers and records",
                limits.overhead
            ));
        }
        skip(stream, padded, &name)?;
        pos += padded;
        long_name = None;
        long_link = false;
        pax = None;
        last = Some(name);
    }
}

/// Copies `r` into `f`, seeking over runs of zeros instead of writing them,
/// so a sparse entry stays sparse on disk.
fn copy_with_holes(r: &mut dyn Read, f: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].iter().all(|&b| b == 0) {
            f.seek(SeekFrom::Current(n as i64))?;
        } else {
            f.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    // A hole at the end is only a length.
    f.set_len(total)?;
    Ok(total)
}

fn unpack_into(archive: &Path, dest: &Path, limits: &Limits) -> Result<(), String> {
    let max_bytes = limits.max_bytes;
    // The format comes from the content, not the name: uploads sit under
    // temporary names while they are checked.
    let mut magic = [0u8; 4];
    let mut file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    let magic = &magic[..n];
    let file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut total = 0u64;
    let mut write_entry = |rel: &Path,
                           reader: &mut dyn Read,
                           size: u64,
                           holes: bool|
     -> Result<(), String> {
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(format!(
                    "archive unpacks to more than the limit of {max_bytes} bytes (entry '{}' holds {size} bytes)",
                    rel.display()
                ));
        }
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut f = File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        // Bound the copy by the declared size, plus one byte to detect a
        // lie: a header cannot get more than it declared past.
        let mut bounded = reader.take(size.saturating_add(1));
        let copied = if holes {
            copy_with_holes(&mut bounded, &mut f)
        } else {
            io::copy(&mut bounded, &mut f)
        }
        .map_err(|e| format!("archive entry '{}': {e}", rel.display()))?;
        if copied > size {
            return Err(format!(
                "archive entry '{}' is larger than its header says ({size} bytes)",
                rel.display()
            ));
        }
        if copied < size {
            return Err(format!(
                "archive entry '{}' holds {copied} bytes but its header says {size}",
                rel.display()
            ));
        }
        Ok(())
    };
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        let archive_len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| format!("not a readable zip archive: {e}"))?;
        if zip.len() > MAX_ENTRIES {
            return Err(format!(
                "archive has {} entries; the limit is {MAX_ENTRIES}",
                zip.len()
            ));
        }
        let mut declared = 0u64;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
            let raw = entry.name().to_string();
            let Some(rel) =
                safe_relative(Path::new(&raw)).filter(|_| entry.enclosed_name().is_some())
            else {
                return Err(format!("archive entry '{raw}' escapes the model folder (absolute path or '..'); refusing the archive"));
            };
            if entry.is_symlink() {
                return Err(format!(
                    "archive entry '{raw}' is a symbolic link; links are not accepted"
                ));
            }
            if entry.is_dir() {
                std::fs::create_dir_all(dest.join(&rel)).map_err(|e| e.to_string())?;
                continue;
            }
            // The declared sizes are checked before anything is read, and
            // `write_entry` reads no more than declared: a header that lies
            // about its size gains nothing.
            let size = entry.size();
            let packed = entry.compressed_size();
            if size > limits.expansion(packed) {
                return Err(format!(
                    "archive entry '{raw}' declares {size} bytes from {packed} compressed; {}",
                    limits.ratio_hint()
                ));
            }
            declared = declared.saturating_add(size);
            if declared > limits.expansion(archive_len) {
                return Err(format!(
                    "archive entry '{raw}': the {archive_len}-byte archive declares more than {} bytes; {}",
                    limits.expansion(archive_len),
                    limits.ratio_hint()
                ));
            }
            write_entry(&rel, &mut entry, size, false)?;
        }
        return Ok(());
    }
    drop(file);
    let gzip = magic.starts_with(&[0x1f, 0x8b]);
    // First pass: every bound checked on the raw headers, nothing kept.
    let positions = scan_tar(&mut tar_stream(archive, gzip, limits)?, limits)?;
    // Second pass: the `tar` crate unpacks what the first pass let through.
    let mut tar = tar::Archive::new(tar_stream(archive, gzip, limits)?);
    let entries = tar
        .entries()
        .map_err(|e| format!("not a readable tar archive: {e}"))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(format!("archive has more than {MAX_ENTRIES} entries"));
        }
        let mut entry = entry.map_err(|e| format!("tar entry {i}: {e}"))?;
        let raw = entry.path().map_err(|e| e.to_string())?.to_path_buf();
        let shown = raw.display().to_string();
        // The checks held only if the crate frames the archive as the first
        // pass did; it always should, and must not be trusted otherwise.
        if positions.get(i) != Some(&entry.raw_header_position()) {
            return Err(format!(
                "archive entry '{shown}' is framed differently by the unpacker than by the checks; refusing the archive"
            ));
        }
        let Some(rel) = safe_relative(&raw) else {
            if raw.components().all(|c| matches!(c, Component::CurDir)) {
                continue;
            }
            return Err(format!("archive entry '{shown}' escapes the model folder (absolute path or '..'); refusing the archive"));
        };
        use tar::EntryType;
        // `Entry::size` is the size the crate reads: a PAX `size` applied,
        // a sparse file expanded.
        let size = entry.size();
        match entry.header().entry_type() {
            EntryType::Directory => {
                std::fs::create_dir_all(dest.join(&rel)).map_err(|e| e.to_string())?
            }
            EntryType::Regular | EntryType::Continuous => {
                write_entry(&rel, &mut entry, size, false)?
            }
            // `tar --sparse` and a `cp`-made sparse file packed by older
            // CLIs: the holes come back as holes.
            EntryType::GNUSparse => write_entry(&rel, &mut entry, size, true)?,
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => {
                return Err(format!(
                    "archive entry '{shown}' is a {other:?}; only files and folders are accepted"
                ))
            }
        }
    }
    Ok(())
}

/// Unpacks `archive` (named by its content hash) into the models folder once.
pub fn unpacked_dir(settings: &Settings, archive: &Path, sha256: &str) -> Result<PathBuf, String> {
    let dest = settings.models_dir().join(sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(settings.models_dir()).map_err(|e| e.to_string())?;
    match unpack(archive, &dest, settings.max_model_bytes) {
        Ok(()) => Ok(dest),
        // Another upload of the same bytes finished first: its folder holds
        // what this one would have (the name is the archive's SHA-256).
        Err(_) if dest.is_dir() => Ok(dest),
        Err(e) => Err(e),
    }
}

fn invalid(path: &str, msg: impl Into<String>) -> DeployError {
    DeployError::invalid(path, msg)
}

/// The SHA-256 and file name of an `upload://SHA256/NAME` model path, when
/// it is one and well formed (64 hex digits, a name that stays in its folder).
pub fn upload_parts(model_path: &str) -> Option<(&str, &str)> {
    let (sha, name) = model_path.strip_prefix("upload://")?.split_once('/')?;
    let ok = sha.len() == 64
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
        && !name.is_empty()
        && safe_relative(Path::new(name)).is_some();
    ok.then_some((sha, name))
}

/// Whether `model_path` can be read here, said cheaply (no download, no
/// unpacking): for a console that checks a config as it is typed. Remote
/// paths (`s3://`, `oss://`) are left to the deploy.
pub fn model_path_problem(settings: &Settings, model_path: &str) -> Option<DeployError> {
    if model_path.starts_with("s3://") || model_path.starts_with("oss://") {
        return None;
    }
    locate_source(settings, model_path).err()
}

/// A `file://` model checked again where it is used (a deploy's fetch),
/// not only where it was named: the file and its folder, their links
/// followed now, are still inside a model root, and the file still has the
/// SHA-256 recorded then. Returns the real paths, for the optimizer to
/// read instead of the links (a link swapped after the check is not
/// followed again).
pub fn recheck_file_model(
    settings: &Settings,
    dir: &Path,
    file: &Path,
    sha256: &str,
) -> Result<(PathBuf, PathBuf), DeployError> {
    let roots: Vec<PathBuf> = settings
        .model_roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .collect();
    let real = |p: &Path| {
        let r = p
            .canonicalize()
            .map_err(|e| invalid("model_path", format!("{}: {e}", p.display())))?;
        if roots.iter().any(|root| r.starts_with(root)) {
            Ok(r)
        } else {
            Err(invalid(
                "model_path",
                format!(
                    "{} now resolves to {}, outside the allowed model roots; the deploy does not read it",
                    p.display(),
                    r.display()
                ),
            ))
        }
    };
    let (dir, file) = (real(dir)?, real(file)?);
    let now = optimizer::artifact::sha256_file(&file)
        .map_err(|e| DeployError::Internal(format!("{}: {e}", file.display())))?;
    if now != sha256 {
        return Err(DeployError::Conflict(format!(
            "the model at {} changed since the service was created or modified (SHA-256 {sha256} then, {now} now); modify the service to deploy it",
            file.display()
        )));
    }
    Ok((dir, file))
}

/// Where `model_path` points, as a local file or folder.
fn locate_source(settings: &Settings, model_path: &str) -> Result<PathBuf, DeployError> {
    if model_path.starts_with("upload://") {
        let p = upload_parts(model_path)
            .map(|(sha, name)| settings.uploads_dir().join(sha).join(name))
            .filter(|p| p.exists());
        return p.ok_or_else(|| invalid("model_path", format!("unknown upload '{model_path}'; upload the model first (the CLI does it for local paths)")));
    }
    if let Some(rest) = model_path.strip_prefix("file://") {
        let p = PathBuf::from(rest);
        if !p.is_absolute() {
            return Err(invalid(
                "model_path",
                format!("expected an absolute path after file://, got '{rest}'"),
            ));
        }
        // Outside every root as written: refused before the path is looked
        // at, so the answer says nothing of what exists elsewhere on the
        // server.
        let written = settings
            .model_roots
            .iter()
            .any(|r| p.starts_with(r) || r.canonicalize().is_ok_and(|r| p.starts_with(r)));
        let real = if written {
            p.canonicalize()
                .map_err(|e| invalid("model_path", format!("{}: {e}", p.display())))?
        } else {
            p.clone()
        };
        let allowed = settings
            .model_roots
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|r| real.starts_with(r));
        if !allowed {
            let roots = settings
                .model_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>();
            return Err(invalid(
                "model_path",
                if roots.is_empty() {
                    "file:// paths are disabled on this server (start it with --model-root DIR to allow a folder); the CLI uploads local paths instead".to_string()
                } else {
                    format!(
                        "{} is outside the allowed model roots ({})",
                        real.display(),
                        roots.join(", ")
                    )
                },
            ));
        }
        return Ok(real);
    }
    if let Some((scheme, _)) = model_path.split_once("://") {
        return Err(invalid(
            "model_path",
            format!("'{scheme}://' model paths are not read by this server (it reads s3://, oss://, upload:// and file://); use a local path with the CLI (it uploads it)"),
        ));
    }
    Err(invalid("model_path", format!("'{model_path}' is a local path of the client: let `whet create` upload it, or use upload:// or file://")))
}

/// The SavedModel folder in `dir` to serve: the one the `model_info` key
/// names (the folder, or its `saved_model.pb`), else the only folder within
/// three levels holding a `saved_model.pb` (TensorFlow Serving's layout
/// puts it under a version folder, `1/`). `None`: no SavedModel (a frozen
/// graph is looked for instead).
fn saved_model_in(dir: &Path, named: Option<&str>) -> Result<Option<PathBuf>, DeployError> {
    if let Some(name) = named {
        let p = dir.join(name);
        if p.is_dir() && p.join("saved_model.pb").is_file() {
            return Ok(Some(p));
        }
        if p.file_name().is_some_and(|n| n == "saved_model.pb") && p.is_file() {
            return Ok(p.parent().map(Path::to_path_buf));
        }
        return Ok(None);
    }
    let mut roots = saved_model_roots(dir);
    match roots.len() {
        0 => Ok(None),
        1 => Ok(roots.pop()),
        _ => {
            let names: Vec<String> = roots
                .iter()
                .map(|r| match r.strip_prefix(dir) {
                    Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
                    Ok(rel) => rel.display().to_string(),
                    Err(_) => r.display().to_string(),
                })
                .collect();
            Err(invalid(
                "model_path",
                format!(
                    "several SavedModels in the model folder ({}); name the one to serve as \
                     the key of plugins[0].config.model_info",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The folders within three levels of `dir` that hold a `saved_model.pb`.
fn saved_model_roots(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    find_models(dir, 3, "pb", &mut found);
    found
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "saved_model.pb"))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect()
}

/// SHA-256 over the relative path and bytes of every file under `dir`,
/// `depth` folder levels deep, in path order: a folder's content address
/// (the optimizer's inputs in the artifact key, a SavedModel's import key).
pub(crate) fn folder_digest(dir: &Path, depth: usize) -> Result<String, DeployError> {
    use sha2::Digest;
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ty = e.file_type()?;
            if ty.is_dir() && depth > 0 {
                walk(root, &e.path(), depth - 1, out)?;
            } else if ty.is_file() {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap_or(&e.path())
                        .to_path_buf(),
                );
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, depth, &mut files)?;
    let mut h = sha2::Sha256::new();
    for rel in files {
        let sha = optimizer::artifact::sha256_file(&dir.join(&rel))
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0u8]);
        h.update(sha.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn find_models(dir: &Path, depth: usize, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            find_models(&p, depth - 1, ext, out);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
            out.push(p);
        }
    }
}

/// The model-touching work of `resolve`, in a child process
/// (`deploy::inspect`): `file` is relative to `dir`.
fn inspect_in_child(
    settings: &Settings,
    cfg: &ServiceConfig,
    dir: &Path,
    file: &Path,
    kind: InspectKind,
    onnx_out: Option<&Path>,
) -> Result<ModelSignature, DeployError> {
    let rel = match file.strip_prefix(dir) {
        Ok(r) if r.as_os_str().is_empty() => PathBuf::from("."),
        Ok(r) => r.to_path_buf(),
        Err(_) => file.to_path_buf(),
    };
    let req = InspectRequest {
        kind,
        file: rel,
        model_info: cfg
            .model_info()
            .map(|(name, info)| (name.to_string(), info.clone())),
        account: settings.runner_account,
    };
    if settings.runner_account.is_some() {
        // The inspector switches to the runner account: it must be able to
        // read what was uploaded (files the server itself stored).
        if dir.starts_with(&settings.data_dir) {
            let _ = crate::sandbox::make_readable(dir);
        }
    }
    crate::deploy::inspect::inspect(settings, dir, &req, cfg.metadata.memory, onnx_out)
        .map(|i| i.signature)
}

/// Imports a TensorFlow frozen graph, or a SavedModel folder, into ONNX
/// once (in the inspector child): the result is kept under
/// `models/tf/<key>.onnx`, keyed by the graph's bytes (every file of a
/// SavedModel) and the declared inputs/outputs/signature, so a redeploy
/// finds it and the artifact key (the ONNX file's hash) stays stable.
/// Everything downstream — the optimizer, serving — then sees an ordinary
/// ONNX model whose tensor names are the graph's (`input:0`), or the
/// SavedModel signature's keys.
fn import_tensorflow(
    settings: &Settings,
    cfg: &ServiceConfig,
    dir: &Path,
    pb: &Path,
) -> Result<(PathBuf, ModelSignature), DeployError> {
    let info = cfg.model_info().map(|(_, i)| i);
    let sha = if pb.is_dir() {
        folder_digest(pb, 8)?
    } else {
        optimizer::artifact::sha256_file(pb).map_err(|e| DeployError::Internal(e.to_string()))?
    };
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(sha.as_bytes());
        h.update(
            format!(
                "{:?}|{:?}|{:?}|tf-import-v2",
                info.and_then(|i| i.inputs.clone()),
                info.and_then(|i| i.outputs.clone()),
                info.and_then(|i| i.signature_name.clone())
            )
            .as_bytes(),
        );
        hex::encode(h.finalize())
    };
    let tf_dir = settings.models_dir().join("tf");
    let out = tf_dir.join(format!("{key}.onnx"));
    // The signature the import found is kept beside it: a redeploy reads
    // it instead of inspecting the import again (from a folder that holds
    // every other team's imports).
    let sig_file = tf_dir.join(format!("{key}.signature.json"));
    if out.is_file() {
        if let Some(sig) = std::fs::read(&sig_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<ModelSignature>(&b).ok())
        {
            return Ok((out, sig));
        }
    }
    std::fs::create_dir_all(&tf_dir)?;
    // Written whole by the child's stream, then renamed: a crash never
    // leaves half a model, and two imports never share a file.
    let tmp = tf_dir.join(format!(".tmp-{key}-{}", rand::random::<u64>()));
    let result = inspect_in_child(settings, cfg, dir, pb, InspectKind::TensorFlow, Some(&tmp));
    match result {
        Ok(sig) => {
            let json =
                serde_json::to_vec(&sig).map_err(|e| DeployError::Internal(e.to_string()))?;
            std::fs::write(&sig_file, json)?;
            std::fs::rename(&tmp, &out)?;
            Ok((out, sig))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Resolves the model of `cfg`: fetches/unpacks it, finds the model file,
/// checks the data files it names, hashes the model, and inspects it with the
/// engine (inputs/outputs checked against `model_info`). Every failure is a
/// path-tagged config error; nothing about the service is stored here.
/// `fetched` is the local copy of a model path in an object store
/// (`remote::materialize`).
pub fn resolve(
    settings: &Settings,
    cfg: &ServiceConfig,
    fetched: Option<PathBuf>,
) -> Result<ResolvedModel, DeployError> {
    let source = match fetched {
        Some(local) => local,
        None => locate_source(settings, &cfg.model_path)?,
    };
    let (dir, direct_file) = if source.is_dir() {
        (source, None)
    } else {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_archive(&name) {
            let sha = optimizer::artifact::sha256_file(&source)
                .map_err(|e| DeployError::Internal(e.to_string()))?;
            let dir =
                unpacked_dir(settings, &source, &sha).map_err(|e| invalid("model_path", e))?;
            (dir, None)
        } else {
            let parent = source.parent().map(Path::to_path_buf).unwrap_or_default();
            (parent, Some(source))
        }
    };

    let model_info = cfg.model_info();
    let runtime = cfg.processor_info().map(|p| p.runtime);
    let tensorflow = runtime == Some(shared::processor::Runtime::TensorFlow);
    let pytorch = runtime == Some(shared::processor::Runtime::PyTorch);
    let model_ext = if tensorflow {
        "pb"
    } else if pytorch {
        "pt/.jit"
    } else {
        "onnx"
    };
    if let Some((name, info)) = model_info {
        if info.signature_name.is_some() && !tensorflow {
            return Err(invalid(
                &format!("plugins[0].config.model_info[\"{name}\"].signature_name"),
                "a SavedModel's signature, which only the TensorFlow processors read; \
                 remove it or use a tensorflow_* processor",
            ));
        }
    }
    // A SavedModel: its folder is the model, not one file in it.
    let saved_model = if tensorflow && direct_file.is_none() {
        saved_model_in(&dir, model_info.map(|(name, _)| name))?
    } else {
        None
    };
    let file = match (saved_model, model_info, direct_file) {
        (Some(root), _, _) => root,
        (None, Some((name, _)), direct) => {
            let p = dir.join(name);
            let matches_direct = direct.as_ref().is_none_or(|d| d == &p);
            if !p.is_file() || !matches_direct {
                return Err(invalid(
                    &format!("plugins[0].config.model_info[\"{name}\"]"),
                    format!(
                        "model file '{name}' not found in model_path ({})",
                        cfg.model_path
                    ),
                ));
            }
            p
        }
        (None, None, Some(f)) => f,
        (None, None, None) => {
            let mut found = Vec::new();
            if pytorch {
                // TorchScript (`torch.jit.save`); a `.pt` named as test or
                // calibration data is data, not the model.
                let data: Vec<PathBuf> = model_info
                    .iter()
                    .flat_map(|(_, i)| [&i.test_data, &i.calibration_dataset])
                    .flatten()
                    .map(|rel| dir.join(rel))
                    .collect();
                for ext in optimizer::engine::TORCHSCRIPT_EXTENSIONS {
                    find_models(&dir, 3, ext, &mut found);
                }
                found.retain(|p| !data.contains(p));
            } else {
                find_models(&dir, 3, model_ext, &mut found);
            }
            match found.len() {
                1 => found.remove(0),
                0 => {
                    let hint = if !tensorflow && !saved_model_roots(&dir).is_empty() {
                        "; it holds a TensorFlow SavedModel (saved_model.pb): deploy it with a \
                         tensorflow_* processor, e.g. tensorflow_cpu_1.15"
                    } else {
                        ""
                    };
                    return Err(invalid(
                        "model_path",
                        format!("no .{model_ext} model file found in the model folder{hint}"),
                    ));
                }
                _ => {
                    let names: Vec<String> = found
                        .iter()
                        .filter_map(|p| p.strip_prefix(&dir).ok())
                        .map(|p| p.display().to_string())
                        .collect();
                    return Err(invalid(
                        "model_path",
                        format!(
                            "several model files ({}); name one in plugins[0].config.model_info",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    };

    // Every data file the config names is in the model folder.
    let mut named = vec![("warm_up_data_path".to_string(), &cfg.warm_up_data_path)];
    if let Some((name, info)) = model_info {
        for (key, value) in [
            ("test_data", &info.test_data),
            ("calibration_dataset", &info.calibration_dataset),
        ] {
            named.push((
                format!("plugins[0].config.model_info[\"{name}\"].{key}"),
                value,
            ));
        }
    }
    for (path, value) in named {
        if let Some(rel) = value {
            if !dir.join(rel).is_file() {
                return Err(invalid(
                    &path,
                    format!("file '{rel}' not found in model_path"),
                ));
            }
        }
    }

    let (file, sig) = if tensorflow {
        import_tensorflow(settings, cfg, &dir, &file)?
    } else if pytorch {
        let sig = inspect_in_child(settings, cfg, &dir, &file, InspectKind::TorchScript, None)?;
        (file, sig)
    } else {
        let sig = inspect_in_child(settings, cfg, &dir, &file, InspectKind::Onnx, None)?;
        (file, sig)
    };
    if let (Some((name, info)), false) = (model_info, pytorch) {
        for (kind, declared, actual) in [
            ("inputs", &info.inputs, &sig.inputs),
            ("outputs", &info.outputs, &sig.outputs),
        ] {
            for (i, n) in declared.iter().flatten().enumerate() {
                if !actual
                    .iter()
                    .any(|s| &s.name == n || s.name.strip_suffix(":0") == Some(n.as_str()))
                {
                    return Err(invalid(
                        &format!("plugins[0].config.model_info[\"{name}\"].{kind}[{i}]"),
                        format!(
                            "the model has no {} named '{n}'; it has: {}",
                            &kind[..kind.len() - 1],
                            actual
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let sha256 = optimizer::artifact::sha256_file(&file)
        .map_err(|e| DeployError::Internal(e.to_string()))?;
    Ok(ResolvedModel {
        dir: dir.display().to_string(),
        file: file.display().to_string(),
        sha256,
        signature: sig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(names: &[&str]) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".zip").tempfile().unwrap();
        let mut z = zip::ZipWriter::new(f.reopen().unwrap());
        for n in names {
            z.start_file(*n, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(b"hello").unwrap();
        }
        z.finish().unwrap();
        f
    }

    #[test]
    fn a_saved_model_is_found_in_a_version_folder_or_named_and_two_are_ambiguous() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let touch = |rel: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        // TensorFlow Serving's layout: <model>/<version>/saved_model.pb.
        touch("1/saved_model.pb");
        touch("1/variables/variables.index");
        touch("1/fingerprint.pb");
        assert_eq!(saved_model_in(dir, None).unwrap(), Some(dir.join("1")));
        touch("2/saved_model.pb");
        let e = format!("{:?}", saved_model_in(dir, None).unwrap_err());
        assert!(
            e.contains("several SavedModels") && e.contains("1, 2"),
            "{e}"
        );
        // The model_info key names one: the folder, or its saved_model.pb.
        assert_eq!(saved_model_in(dir, Some("2")).unwrap(), Some(dir.join("2")));
        assert_eq!(
            saved_model_in(dir, Some("1/saved_model.pb")).unwrap(),
            Some(dir.join("1"))
        );
        // A frozen graph's name is not a SavedModel.
        touch("frozen.pb");
        assert_eq!(saved_model_in(dir, Some("frozen.pb")).unwrap(), None);
    }

    #[test]
    fn a_saved_model_folder_digest_covers_every_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        std::fs::create_dir_all(dir.join("variables")).unwrap();
        std::fs::write(dir.join("saved_model.pb"), b"graph").unwrap();
        std::fs::write(dir.join("variables/variables.data-00000-of-00001"), b"a").unwrap();
        let first = folder_digest(dir, 8).unwrap();
        assert_eq!(folder_digest(dir, 8).unwrap(), first);
        std::fs::write(dir.join("variables/variables.data-00000-of-00001"), b"b").unwrap();
        assert_ne!(
            folder_digest(dir, 8).unwrap(),
            first,
            "a variable's bytes changed"
        );
    }

    #[test]
    fn zip_with_parent_entries_is_refused_and_leaves_nothing() {
        let z = zip_with(&["ok.txt", "../evil.txt"]);
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("m");
        let err = unpack(z.path(), &dest, 1 << 20).unwrap_err();
        assert!(
            err.contains("../evil.txt") && err.contains("escapes"),
            "{err}"
        );
        assert!(!dest.exists());
        assert!(!root.path().join("evil.txt").exists());
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "temporary folder left behind"
        );
    }

    #[test]
    fn one_archive_unpacked_twice_at_once_gives_one_folder() {
        let z = zip_with(&["a/model.onnx", "b.npz"]);
        let root = tempfile::tempdir().unwrap();
        let settings = Settings::new(root.path().to_path_buf(), PathBuf::from("whet"));
        let sha = "ab".repeat(32);
        let dirs: Vec<Result<PathBuf, String>> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| unpacked_dir(&settings, z.path(), &sha)))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for d in dirs {
            let d = d.expect("every concurrent unpack succeeds");
            assert_eq!(std::fs::read(d.join("a/model.onnx")).unwrap(), b"hello");
        }
        // Only the folder itself is left: no temporary one beside it.
        let names: Vec<_> = std::fs::read_dir(settings.models_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&sha)]);
    }

    #[test]
    fn good_zip_unpacks() {
        let z = zip_with(&["a/model.onnx", "b.npz"]);
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("m");
        unpack(z.path(), &dest, 1 << 20).unwrap();
        assert_eq!(std::fs::read(dest.join("a/model.onnx")).unwrap(), b"hello");
    }

    #[test]
    fn size_limit_is_enforced() {
        let z = zip_with(&["a", "b", "c"]);
        let root = tempfile::tempdir().unwrap();
        let err = unpack(z.path(), &root.path().join("m"), 12).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn tar_with_absolute_or_parent_path_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let tar_path = root.path().join("x.tar");
        // The tar crate refuses to write '..' paths, so build the header by hand.
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../etc/foo");
        header.set_size(5);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
        b.append(&header, &b"hello"[..]).unwrap();
        b.into_inner().unwrap();
        let err = unpack(&tar_path, &root.path().join("m"), 1 << 20).unwrap_err();
        assert!(err.contains("escapes"), "{err}");
        assert!(!root.path().join("m").exists());
    }

    /// A 512-byte tar header written by hand, so nothing checks it on the
    /// way: `size` is the raw 12-byte field, `gnu` picks GNU's magic over
    /// ustar's. The checksum is the real one.
    fn raw_header(name: &str, typeflag: u8, size: [u8; 12], gnu: bool) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(&size);
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[257..265].copy_from_slice(if gnu { b"ustar  \0" } else { b"ustar\x0000" });
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn octal12(n: u64) -> [u8; 12] {
        let mut f = [0u8; 12];
        f.copy_from_slice(format!("{n:011o}\0").as_bytes());
        f
    }

    /// GNU's base-256 size: the high bit set, the number big-endian.
    fn base256(n: u64) -> [u8; 12] {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&n.to_be_bytes());
        f
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// One PAX record, `len key=value\n`, its length counting itself.
    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        format!("{len} {key}={value}\n").into_bytes()
    }

    fn refused(archive: &Path, limits: &Limits) -> String {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("m");
        let t0 = std::time::Instant::now();
        let err = unpack_with(archive, &dest, limits).unwrap_err();
        // Refused before the claimed gigabytes are read or held.
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{err}");
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
        err
    }

    #[test]
    fn tar_gz_pax_record_claiming_4_gib_is_refused_unread() {
        let root = tempfile::tempdir().unwrap();
        let mut tar = raw_header("PaxHeaders.0/model.onnx", b'x', octal12(4 << 30), false).to_vec();
        // Some of the claimed record, not 4 GiB of it.
        tar.extend(std::iter::repeat_n(b'a', 1 << 20));
        let path = root.path().join("x.tar.gz");
        std::fs::write(&path, gzip(&tar)).unwrap();
        let err = refused(&path, &Limits::new(8192 << 20));
        assert!(
            err.contains("'PaxHeaders.0/model.onnx'")
                && err.contains("PAX record of 4294967296 bytes")
                && err.contains("65536"),
            "{err}"
        );
    }

    #[test]
    fn tar_gnu_long_name_or_link_claiming_huge_size_is_refused_unread() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("x.tar");
        // Base-256, as GNU tar writes sizes past 8 GiB.
        let mut tar = raw_header("././@LongLink", b'L', base256(1 << 40), true).to_vec();
        tar.extend([b'n'; 4096]);
        std::fs::write(&path, &tar).unwrap();
        let err = refused(&path, &Limits::new(8192 << 20));
        assert!(
            err.contains("'././@LongLink'")
                && err.contains("GNU long-name record of 1099511627776 bytes"),
            "{err}"
        );
        // Just past the cap, each record type, the data all there.
        for (flag, what) in [
            (b'L', "GNU long-name"),
            (b'K', "GNU long-link"),
            (b'x', "PAX record"),
            (b'g', "PAX global"),
        ] {
            let mut tar = raw_header("rec", flag, octal12(MAX_TAR_RECORD + 1), true).to_vec();
            tar.extend(std::iter::repeat_n(b'n', (MAX_TAR_RECORD + 512) as usize));
            tar.extend([0u8; 1024]);
            std::fs::write(&path, &tar).unwrap();
            let err = refused(&path, &Limits::new(8192 << 20));
            assert!(err.contains("'rec'") && err.contains(what), "{err}");
        }
    }

    #[test]
    fn tar_declaring_more_than_the_limit_is_refused_before_its_data() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("x.tar");
        let mut tar = raw_header("big.bin", b'0', base256(10 << 30), false).to_vec();
        tar.extend([1u8; 4096]);
        std::fs::write(&path, &tar).unwrap();
        let err = refused(&path, &Limits::new(1 << 20));
        assert!(
            err.contains("limit of 1048576 bytes") && err.contains("'big.bin'"),
            "{err}"
        );
    }

    #[test]
    fn tar_gz_bomb_is_refused_by_the_ratio() {
        let root = tempfile::tempdir().unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_path("zeros.bin").unwrap();
        header.set_size(50 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        b.append(&header, std::io::repeat(0).take(50 << 20))
            .unwrap();
        let gz = b.into_inner().unwrap().finish().unwrap();
        assert!(gz.len() < 200 << 10, "{}", gz.len());
        let path = root.path().join("bomb.tar.gz");
        std::fs::write(&path, &gz).unwrap();
        // Within the size limit: only the ratio stops it.
        let err = refused(&path, &Limits::new(1 << 30));
        assert!(
            err.contains("'zeros.bin'") && err.contains("200:1"),
            "{err}"
        );
    }

    #[test]
    fn bounded_stream_stops_past_the_size_limit_or_the_ratio() {
        let limits = Limits {
            overhead: 0,
            ..Limits::new(1000)
        };
        let mut r = Bounded::new(std::io::repeat(0).take(10_000), &limits, None);
        let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(err.to_string().contains("model size limit"), "{err}");
        assert!(r.read <= 2024 + 8192, "{}", r.read);
        let limits = Limits {
            ratio_free: 0,
            ..Limits::new(1 << 30)
        };
        let mut r = Bounded::new(std::io::repeat(0).take(10_000), &limits, Some(10));
        let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(err.to_string().contains("200:1"), "{err}");
    }

    #[test]
    fn pax_size_overrides_the_header_as_the_tar_crate_reads_it() {
        // The header says 0 bytes, the PAX record 5: the crate reads 5, and
        // the checks must frame the archive the same way.
        let root = tempfile::tempdir().unwrap();
        let long = format!("{}/model.onnx", "d".repeat(150));
        let mut records = pax_record("size", "5");
        records.extend(pax_record("path", &long));
        let mut tar =
            raw_header("PaxHeaders/x", b'x', octal12(records.len() as u64), false).to_vec();
        tar.extend(&records);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
        tar.extend(raw_header("short", b'0', octal12(0), false));
        tar.extend(b"hello");
        tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
        let path = root.path().join("x.tar");
        std::fs::write(&path, &tar).unwrap();
        let dest = root.path().join("m");
        unpack(&path, &dest, 1 << 20).unwrap();
        assert_eq!(std::fs::read(dest.join(&long)).unwrap(), b"hello");
        // A lower limit names the entry by its PAX path.
        let err = unpack(&path, &root.path().join("n"), 4).unwrap_err();
        assert!(err.contains(&long) && err.contains("limit"), "{err}");
    }

    #[test]
    fn good_tar_gz_with_long_names_and_folders_unpacks() {
        let root = tempfile::tempdir().unwrap();
        let long = format!("{}/model.onnx", "n".repeat(120));
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        let add = |b: &mut tar::Builder<_>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Past 100 bytes, the builder writes a GNU long-name record.
            b.append_data(&mut h, name, data).unwrap();
        };
        add(&mut b, &long, b"onnx bytes");
        add(&mut b, "data/test.npz", &[7u8; 3000]);
        let gz = b.into_inner().unwrap().finish().unwrap();
        let path = root.path().join("m.tar.gz");
        std::fs::write(&path, gz).unwrap();
        let dest = root.path().join("m");
        unpack(&path, &dest, 1 << 20).unwrap();
        assert_eq!(std::fs::read(dest.join(&long)).unwrap(), b"onnx bytes");
        assert_eq!(
            std::fs::read(dest.join("data/test.npz")).unwrap(),
            [7u8; 3000]
        );
    }

    /// A GNU sparse entry: `hello` at 1 MiB, a hole before it.
    fn sparse_tar(path: &Path) {
        let mut h = tar::Header::new_gnu();
        h.set_path("weights.bin").unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(5);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(1 << 20);
        gnu.sparse[0].set_length(5);
        gnu.set_real_size((1 << 20) + 5);
        h.set_cksum();
        let mut b = tar::Builder::new(File::create(path).unwrap());
        b.append(&h, &b"hello"[..]).unwrap();
        b.into_inner().unwrap();
    }

    #[test]
    fn sparse_tar_entries_unpack_counted_expanded() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("s.tar");
        sparse_tar(&path);
        let dest = root.path().join("m");
        unpack(&path, &dest, 2 << 20).unwrap();
        let got = std::fs::read(dest.join("weights.bin")).unwrap();
        assert_eq!(got.len(), (1 << 20) + 5);
        assert!(got[..1 << 20].iter().all(|&b| b == 0));
        assert_eq!(&got[1 << 20..], b"hello");
        // 5 bytes stored, but 1 MiB + 5 unpacked: that is what counts.
        let err = unpack(&path, &root.path().join("n"), 1 << 20).unwrap_err();
        assert!(
            err.contains("'weights.bin'") && err.contains("limit"),
            "{err}"
        );
    }

    #[test]
    fn sparse_map_extension_blocks_are_framed_as_the_tar_crate_reads_them() {
        // Six 512-byte chunks 8 KiB apart: four in the header, two in an
        // extension block between the header and the data; a file after it.
        let mut h = tar::Header::new_gnu();
        h.set_path("weights.bin").unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(6 * 512);
        let gnu = h.as_gnu_mut().unwrap();
        for (k, slot) in gnu.sparse.iter_mut().enumerate() {
            slot.set_offset(k as u64 * 8192);
            slot.set_length(512);
        }
        gnu.set_is_extended(true);
        gnu.set_real_size(5 * 8192 + 512);
        h.set_cksum();
        let mut ext = tar::GnuExtSparseHeader::new();
        for k in 4..6 {
            ext.sparse[k - 4].set_offset(k as u64 * 8192);
            ext.sparse[k - 4].set_length(512);
        }
        let mut tar = h.as_bytes().to_vec();
        tar.extend(ext.as_bytes());
        for k in 0..6u8 {
            tar.extend([k + 1; 512]);
        }
        let mut after = tar::Header::new_gnu();
        after.set_path("after.txt").unwrap();
        after.set_size(2);
        after.set_mode(0o644);
        after.set_cksum();
        tar.extend(after.as_bytes());
        tar.extend(b"ok");
        tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("s.tar");
        std::fs::write(&path, &tar).unwrap();
        let dest = root.path().join("m");
        unpack(&path, &dest, 1 << 20).unwrap();
        let got = std::fs::read(dest.join("weights.bin")).unwrap();
        assert_eq!(got.len(), 5 * 8192 + 512);
        for k in 0..6 {
            assert!(got[k * 8192..k * 8192 + 512]
                .iter()
                .all(|&b| b == k as u8 + 1));
        }
        assert!(got[512..8192].iter().all(|&b| b == 0));
        assert_eq!(std::fs::read(dest.join("after.txt")).unwrap(), b"ok");
        // A sparse map longer than a record may be is refused.
        let limits = Limits {
            record: 256,
            ..Limits::new(1 << 20)
        };
        let err = refused(&path, &limits);
        assert!(
            err.contains("'weights.bin'") && err.contains("sparse map"),
            "{err}"
        );
    }

    #[test]
    fn pax_format_sparse_files_are_refused_by_name() {
        // As `tar --format=pax --sparse` writes them (format 1.0).
        let mut records = pax_record("GNU.sparse.major", "1");
        records.extend(pax_record("GNU.sparse.minor", "0"));
        records.extend(pax_record("GNU.sparse.name", "weights.bin"));
        records.extend(pax_record("GNU.sparse.realsize", "1048576"));
        let mut tar =
            raw_header("PaxHeaders/w", b'x', octal12(records.len() as u64), false).to_vec();
        tar.extend(&records);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
        tar.extend(raw_header(
            "GNUSparseFile.0/weights.bin",
            b'0',
            octal12(0),
            false,
        ));
        tar.extend([0u8; 1024]);
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("p.tar");
        std::fs::write(&path, &tar).unwrap();
        let err = refused(&path, &Limits::new(1 << 30));
        assert!(
            err.contains("'GNUSparseFile.0/weights.bin'") && err.contains("PAX-format sparse"),
            "{err}"
        );
    }

    /// A zip of `entries`, deflated.
    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    #[test]
    fn zip_entry_lying_about_its_size_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let data = vec![b'a'; 100_000];
        let good = zip_of(&[("w.bin", &data)]);
        let central = good.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        for (claimed, says) in [
            (10u32, "larger than its header says (10 bytes)"),
            (1_000_000, "holds 100000 bytes but its header says 1000000"),
        ] {
            let mut z = good.clone();
            // The uncompressed size, in the local and the central header.
            z[22..26].copy_from_slice(&claimed.to_le_bytes());
            z[central + 24..central + 28].copy_from_slice(&claimed.to_le_bytes());
            let path = root.path().join("lie.zip");
            std::fs::write(&path, &z).unwrap();
            let err = refused(&path, &Limits::new(1 << 30));
            assert!(err.contains("'w.bin'") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn zip_beyond_the_ratio_is_refused_per_entry_and_in_all() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("bomb.zip");
        let zeros = vec![0u8; 1 << 20];
        std::fs::write(&path, zip_of(&[("zeros.bin", &zeros)])).unwrap();
        let err = refused(
            &path,
            &Limits {
                ratio_free: 0,
                ..Limits::new(1 << 30)
            },
        );
        assert!(
            err.contains("'zeros.bin'") && err.contains("200:1"),
            "{err}"
        );
        // Many entries each within the free allowance: the archive's own
        // ratio still holds.
        let small = vec![0u8; 30 << 10];
        let names: Vec<String> = (0..20).map(|i| format!("z{i}.bin")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &small[..])).collect();
        std::fs::write(&path, zip_of(&entries)).unwrap();
        let err = refused(
            &path,
            &Limits {
                ratio_free: 32 << 10,
                ratio: 50,
                ..Limits::new(1 << 30)
            },
        );
        assert!(
            err.contains("archive declares more than") && err.contains("50:1"),
            "{err}"
        );
    }
}

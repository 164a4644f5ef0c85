//! `cargo run -p xtask -- build-console [--release] [--locked] [--out DIR]`
//!
//! Builds the web console (`frontend/`) for wasm32, runs wasm-bindgen as a
//! library (no CLI to install, no version drift: it is pinned to the
//! `wasm-bindgen` in Cargo.lock), and writes the bundle that `whet serve`
//! serves: `index.html`, its boot script `whetstone-boot-<hash>.js`, and
//! the content-hashed `whetstone-<hash>.js` /
//! `whetstone-<hash>_bg.wasm`, each with a `.gz` copy. Default output:
//! `target/console/` (where `whet serve` looks next to `target/*/whet`).
//!
//! Files are written new-first and `index.html` last (by rename), so a
//! server reading the folder never points a browser at a missing file.
//! No wasm-opt: Debian's binaryen breaks the module (see STACK.md).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo run -p xtask -- build-console [--release] [--locked] [--out DIR]";
const FRONTEND: &str = "whetstone-frontend";
const TARGET: &str = "wasm32-unknown-unknown";
/// Cargo profile of release bundles: release, tuned for size. Defined on the
/// command line so the workspace's own release profile stays as it is.
///
/// `erase_components` is Leptos's switch that makes every component return a
/// type-erased view: without it each page's nested view types are
/// monomorphized whole, and the bundle was 64 KB (gzip) larger. (A
/// `RUSTFLAGS` in the environment replaces this setting, as cargo's
/// precedence goes; the bundle then still works, only larger.)
const CONSOLE_PROFILE: [&str; 10] = [
    "--config",
    "target.wasm32-unknown-unknown.rustflags=[\"--cfg\",\"erase_components\"]",
    "--config",
    "profile.console.inherits=\"release\"",
    "--config",
    "profile.console.opt-level=\"z\"",
    "--config",
    "profile.console.lto=true",
    "--config",
    "profile.console.codegen-units=1",
];

struct Options {
    release: bool,
    locked: bool,
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((cmd, rest)) if cmd == "build-console" => {
            parse_options(rest).and_then(|o| build_console(&o))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        release: false,
        locked: false,
        out: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--release" => o.release = true,
            "--locked" => o.locked = true,
            "--out" => o.out = Some(it.next().context("--out needs a folder")?.into()),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

fn build_console(o: &Options) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask is not inside the workspace")?
        .to_path_buf();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    let out = o.out.clone().unwrap_or_else(|| target_dir.join("console"));

    let wasm = cargo_build(&root, &target_dir, o)?;
    let staging = target_dir.join("console-staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    bindgen(&wasm, &staging, o.release)?;
    assemble(&root, &staging, &out)?;
    std::fs::remove_dir_all(&staging).ok();
    Ok(())
}

/// `cargo build` of the frontend for wasm32; returns the `.wasm` path.
fn cargo_build(root: &Path, target_dir: &Path, o: &Options) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "-p", FRONTEND, "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    let profile_dir = if o.release {
        cmd.args(CONSOLE_PROFILE).args(["--profile", "console"]);
        "console"
    } else {
        "debug"
    };
    if o.locked {
        cmd.arg("--locked");
    }
    eprintln!("building the console ({profile_dir}) for {TARGET}");
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build of {FRONTEND} failed ({status})");
    }
    let wasm = target_dir
        .join(TARGET)
        .join(profile_dir)
        .join(format!("{FRONTEND}.wasm"));
    if !wasm.is_file() {
        bail!("cargo finished but {} is missing", wasm.display());
    }
    Ok(wasm)
}

/// wasm-bindgen for the `web` target: an ES module with an `init` that takes
/// the wasm URL (no default path baked in: index.html passes the hashed name).
fn bindgen(wasm: &Path, staging: &Path, release: bool) -> Result<()> {
    let mut b = wasm_bindgen_cli_support::Bindgen::new();
    b.input_path(wasm)
        .out_name("whetstone")
        .web(true)?
        .typescript(false)
        .omit_default_module_path(true)
        .debug(!release)
        .keep_debug(!release)
        // Function names are for debugging only; dropping them took a release
        // bundle from 1.23 MB to 0.73 MB.
        .remove_name_section(release)
        .remove_producers_section(release);
    b.generate(staging)
        .with_context(|| format!("wasm-bindgen on {}", wasm.display()))
}

/// Names files by content, writes index.html from `frontend/index.html`, gzips.
fn assemble(root: &Path, staging: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let js = read(&staging.join("whetstone.js"))?;
    let wasm = read(&staging.join("whetstone_bg.wasm"))?;
    let js_name = format!("whetstone-{}.js", content_hash(&js));
    let wasm_name = format!("whetstone-{}_bg.wasm", content_hash(&wasm));

    let mut keep = BTreeSet::new();
    for (name, data) in [(&js_name, &js), (&wasm_name, &wasm)] {
        write_with_gzip(out, name, data, &mut keep)?;
    }
    // Inline JS snippets of dependencies, imported relative to the JS file.
    let snippets = staging.join("snippets");
    if snippets.is_dir() {
        copy_tree(&snippets, &out.join("snippets"))?;
        keep.insert("snippets".to_string());
    }

    // The boot script is a file, not inline: the server's
    // Content-Security-Policy allows scripts from its own origin only.
    let boot = std::fs::read_to_string(root.join("frontend/boot.js"))
        .context("reading frontend/boot.js")?
        .replace("{{JS}}", &format!("/{js_name}"))
        .replace("{{WASM}}", &format!("/{wasm_name}"));
    let boot_name = format!("whetstone-boot-{}.js", content_hash(boot.as_bytes()));
    write_with_gzip(out, &boot_name, boot.as_bytes(), &mut keep)?;

    let template = std::fs::read_to_string(root.join("frontend/index.html"))
        .context("reading frontend/index.html")?;
    let index = template
        .replace("{{JS}}", &format!("/{js_name}"))
        .replace("{{WASM}}", &format!("/{wasm_name}"))
        .replace("{{BOOT}}", &format!("/{boot_name}"));
    write_with_gzip(out, "index.html", index.as_bytes(), &mut keep)?;
    remove_stale(out, &keep)?;

    let gz = std::fs::metadata(out.join(format!("{wasm_name}.gz")))?.len();
    eprintln!(
        "console written to {}\n  {wasm_name}: {} bytes, {gz} gzip\n  {js_name}: {} bytes",
        out.display(),
        wasm.len(),
        js.len()
    );
    Ok(())
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// FNV-1a, 64 bits, as 16 hex digits: enough to tell builds apart for caching.
fn content_hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Writes `name` and `name.gz` (each through a temporary file and a rename).
fn write_with_gzip(out: &Path, name: &str, data: &[u8], keep: &mut BTreeSet<String>) -> Result<()> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    let gz = enc.finish()?;
    // The .gz first: once `name` exists, its compressed copy must be current.
    let gz_name = format!("{name}.gz");
    write_atomic(&out.join(&gz_name), &gz)?;
    write_atomic(&out.join(name), data)?;
    keep.insert(gz_name);
    keep.insert(name.to_string());
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-xtask");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying to {}", dest.display()))?;
        }
    }
    Ok(())
}

/// Removes bundle files of earlier builds (only names this task writes).
fn remove_stale(out: &Path, keep: &BTreeSet<String>) -> Result<()> {
    for entry in std::fs::read_dir(out)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("whetstone-") || name.starts_with("index.html");
        if ours && !keep.contains(&name) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_16_hex_and_content_dependent() {
        let a = content_hash(b"a");
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, content_hash(b"b"));
    }
}

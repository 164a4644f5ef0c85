//! The data folder as one server's own: an exclusive lock held for the
//! server's life (a second `whet serve` on the folder would re-queue the
//! first one's running jobs and write the same files), and modes that keep
//! other accounts out of it (the folder 0700, the database files 0600).

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The lock file in the data folder; it names the process that holds it.
pub const LOCK_FILE: &str = "whet.lock";

/// Held while the server runs; the kernel lets go of it when the process
/// ends, however it ends.
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
}

/// Takes the data folder `dir` for this process, or says which process has
/// it.
pub fn lock(dir: &Path) -> Result<DataLock, String> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !taken {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(format!(
            "the data folder {} is in use by another whet serve{}: stop it, or give this one another --data folder",
            dir.display(),
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            }
        ));
    }
    let pid = std::process::id().to_string();
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()));
    written.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(DataLock { _file: file })
}

/// Closes the data folder to other accounts (0700) and its SQLite files to
/// all but the owner (0600): they hold token hashes, configs and models.
pub fn restrict(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for name in ["whetstone.db", "whetstone.db-wal", "whetstone.db-shm"] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_data_folder_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).expect("the first lock");
        let err = lock(dir.path()).expect_err("a second lock");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        lock(dir.path()).expect("free again once the first is gone");
    }

    #[test]
    fn the_data_folder_and_database_are_closed_to_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("whetstone.db"), b"").unwrap();
        restrict(dir.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("whetstone.db")), 0o600);
    }
}

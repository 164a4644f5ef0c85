//! Hardening, end to end on a real server: the data folder belongs to one
//! server and to its account.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use whetstone_e2e::{whet_bin, Server};

#[test]
fn a_second_server_on_the_same_data_folder_is_refused_and_the_first_serves_on() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let first = Server::start(&data, &[]);
    let out = Command::new(whet_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .expect("whet serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second server started: {stderr}");
    assert!(
        stderr.contains("in use by another whet serve")
            && stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );
    // The first server is untouched.
    let (status, _) = first.http("GET", "/v2/health/ready", None, b"");
    assert_eq!(status, 200);
}

#[test]
fn the_data_folder_and_its_database_are_closed_to_other_accounts() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let _server = Server::start(&data, &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("whetstone.db")), 0o600);
    assert_eq!(mode(&data.join("admin-token")), 0o600);
}

//! Teams, users, roles and share links through the real CLI against a real
//! `whet serve`: a site admin creates a team and users, a deployer deploys
//! into it, a viewer sees but cannot delete, an outsider sees nothing, and a
//! share link works signed out until it is revoked.

use std::process::Output;

use whetstone_e2e::Server;

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a refusal: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn roles_and_share_links_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let run = |args: &[&str]| server.cli(args).output().unwrap();
    let as_user = |token: &str, args: &[&str]| {
        let mut c = server.cli(args);
        c.env("WHET_TOKEN", token);
        c.output().unwrap()
    };

    assert!(ok(run(&["whoami"])).contains("admin (site admin)"));
    ok(run(&["team", "create", "ml"]));
    ok(run(&["team", "create", "web"]));
    for (user, team, role) in [
        ("dana", "ml", "deployer"),
        ("vic", "ml", "viewer"),
        ("wes", "web", "admin"),
    ] {
        ok(run(&["user", "create", user]));
        ok(run(&["team", "add", team, user, "--role", role]));
    }
    let token = |user: &str| {
        ok(run(&["user", "token", user, "--name", "e2e"]))
            .trim()
            .to_string()
    };
    let (dana, vic, wes) = (token("dana"), token("vic"), token("wes"));
    let shown = ok(run(&["team", "show", "ml"]));
    assert!(
        shown.contains("dana") && shown.contains("deployer") && shown.contains("viewer"),
        "{shown}"
    );

    // The deployer deploys the example model into team ml.
    let ex = tmp.path().join("example");
    ok(run(&["example-model", ex.to_str().unwrap()]));
    let cfg = ex.join("service.json");
    let out = ok(as_user(
        &dana,
        &["create", cfg.to_str().unwrap(), "--team", "ml"],
    ));
    assert!(out.contains("Service is running"), "{out}");

    // The viewer lists and describes it, but may not delete or scale it.
    assert!(ok(as_user(&vic, &["list"])).contains("example_mlp"));
    ok(as_user(&vic, &["desc", "example_mlp"]));
    let e = refused(as_user(&vic, &["delete", "example_mlp"]));
    assert!(e.contains("deployer role in team 'ml'"), "{e}");
    refused(as_user(&vic, &["scale", "example_mlp", "2"]));
    // An outsider does not see it at all: 404, not 403.
    assert!(!ok(as_user(&wes, &["list"])).contains("example_mlp"));
    let e = refused(as_user(&wes, &["desc", "example_mlp"]));
    assert!(e.contains("no service named 'example_mlp'"), "{e}");
    let e = refused(as_user(&wes, &["team", "show", "ml"]));
    assert!(e.contains("no team named 'ml'"), "{e}");
    // A viewer may not create users or teams.
    refused(as_user(&vic, &["user", "create", "mallory"]));

    // The dashboard counts the service and the predictions.
    let (s, _) = server.http(
        "POST",
        "/api/predict/example_mlp",
        Some(
            &serde_json::from_value::<String>(
                server.admin("GET", "/api/v2/services/example_mlp", b"").1["token"].clone(),
            )
            .unwrap(),
        ),
        &std::fs::read(ex.join("request.json")).unwrap(),
    );
    assert_eq!(s, 200);
    let dash = ok(as_user(&vic, &["team", "dashboard", "ml"]));
    assert!(
        dash.contains("1 Running") && dash.contains("1 requests"),
        "{dash}"
    );

    // A share link works without a token until it is revoked.
    let url = ok(as_user(&dana, &["share", "create", "example_mlp"]))
        .trim()
        .to_string();
    let path = url
        .strip_prefix(&server.url())
        .unwrap()
        .replace("/s/", "/api/v2/shared/");
    let (s, body) = server.http("GET", &path, None, b"");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"Running\""), "{body}");
    // The links are a deployer's secret until the team lets viewers see
    // them (its admin: here the site admin).
    let why = refused(as_user(&vic, &["share", "list", "example_mlp"]));
    assert!(why.contains("viewers_see_secrets"), "{why}");
    refused(as_user(
        &dana,
        &["team", "set", "ml", "--viewers-see-secrets", "true"],
    ));
    let shown = ok(server
        .cli(&["team", "set", "ml", "--viewers-see-secrets", "true"])
        .output()
        .unwrap());
    assert!(
        shown.contains("Viewers see tokens and share links: yes"),
        "{shown}"
    );
    // Listed by id and author: the URL was shown once, at create.
    let listed = ok(as_user(&vic, &["share", "list", "example_mlp"]));
    assert!(
        listed.contains("dana") && !listed.contains(&url),
        "{listed}"
    );
    refused(as_user(&vic, &["share", "revoke", "example_mlp", &url]));
    ok(as_user(&dana, &["share", "revoke", "example_mlp", &url]));
    assert_eq!(server.http("GET", &path, None, b"").0, 404);

    // A revoked user token stops working.
    let list = ok(as_user(&vic, &["user", "tokens", "vic"]));
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    ok(as_user(&vic, &["user", "revoke", "vic", &id]));
    let e = refused(as_user(&vic, &["list"]));
    assert!(e.contains("invalid or revoked"), "{e}");

    // The deployer deletes.
    ok(as_user(&dana, &["delete", "example_mlp"]));
}

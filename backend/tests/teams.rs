//! Users, teams, roles and share links through the router (no socket):
//! every service call checks the caller's role in the service's team, other
//! teams' services do not exist for a caller, tokens are shown once and
//! revocable, share links are public until revoked.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{json, Value};

async fn app() -> TestApp {
    TestApp::open().await
}

impl TestApp {
    async fn json(&self, method: &str, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(method, uri, Some(token), body.to_string().into_bytes())
            .await
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call("GET", uri, token, vec![]).await
    }

    /// Creates a user with a token and a role in `team`; returns the token.
    async fn user(&self, name: &str, team: &str, role: &str) -> String {
        let (s, b) = self
            .json("POST", "/api/v2/users", &self.admin, json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = self
            .json(
                "PUT",
                &format!("/api/v2/teams/{team}/members/{name}"),
                &self.admin,
                json!({"role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = self
            .json(
                "POST",
                &format!("/api/v2/users/{name}/tokens"),
                &self.admin,
                json!({"name": "test"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    /// Uploads a small ONNX model and creates service `name` in `team`.
    async fn service(&self, token: &str, name: &str, team: &str) -> (StatusCode, Value) {
        let (s, up) = self.upload_mlp(token).await;
        if s != StatusCode::OK {
            return (s, up);
        }
        let cfg = json!({"name": name, "model_path": up["model_path"], "processor": "onnx_cpu"});
        self.json("POST", &format!("/api/v2/services?team={team}"), token, cfg)
            .await
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_admin_token_is_the_first_site_admin() {
    let app = app().await;
    let (s, me) = app.get("/api/v2/me", Some(&app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    // The token it was asked with is named by its id: the admin token is
    // the first token there is.
    assert_eq!(
        me,
        json!({"user": "admin", "site_admin": true, "teams": [{"team": "default", "role": "admin"}], "token_id": 1})
    );
    let (s, created) = app.service(&app.admin, "first_svc", "default").await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["team"], "default");
}

#[tokio::test]
async fn roles_decide_what_a_member_may_do() {
    let app = app().await;
    let (s, b) = app
        .json("POST", "/api/v2/teams", &app.admin, json!({"name": "ml"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let deployer = app.user("dana", "ml", "deployer").await;
    let viewer = app.user("vic", "ml", "viewer").await;

    let (s, b) = app.service(&deployer, "ml_svc", "ml").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["team"], "ml");

    // A viewer sees the service and its log...
    assert_eq!(
        app.get("/api/v2/services/ml_svc", Some(&viewer)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v2/services/ml_svc/logs", Some(&viewer))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        names(&app.get("/api/v2/services", Some(&viewer)).await.1),
        vec!["ml_svc"]
    );
    // ...but may not deploy, scale, stop, delete, share or upload.
    let (s, b) = app
        .call("DELETE", "/api/v2/services/ml_svc", Some(&viewer), vec![])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("deployer role in team 'ml'"),
        "{b}"
    );
    let (s, _) = app
        .json(
            "POST",
            "/api/v2/services/ml_svc/scale",
            &viewer,
            json!({"instances": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .call(
            "POST",
            "/api/v2/services/ml_svc/stop",
            Some(&viewer),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .call(
            "POST",
            "/api/v2/services/ml_svc/shares",
            Some(&viewer),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.service(&viewer, "viewer_svc", "ml").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Nothing changed.
    assert_eq!(
        app.get("/api/v2/services/ml_svc", Some(&deployer)).await.0,
        StatusCode::OK
    );
    // A deployer may not manage members; the team admin may.
    let (s, _) = app
        .json(
            "PUT",
            "/api/v2/teams/ml/members/vic",
            &deployer,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The deployer deletes.
    let (s, b) = app
        .call("DELETE", "/api/v2/services/ml_svc", Some(&deployer), vec![])
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

#[tokio::test]
async fn other_teams_services_do_not_exist_for_a_caller() {
    let app = app().await;
    for t in ["ml", "web"] {
        let (s, b) = app
            .json("POST", "/api/v2/teams", &app.admin, json!({"name": t}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let ml = app.user("mia", "ml", "admin").await;
    let web = app.user("wes", "web", "deployer").await;
    assert_eq!(
        app.service(&ml, "ml_model", "ml").await.0,
        StatusCode::CREATED
    );

    assert!(names(&app.get("/api/v2/services", Some(&web)).await.1).is_empty());
    for (m, uri) in [
        ("GET", "/api/v2/services/ml_model"),
        ("GET", "/api/v2/services/ml_model/logs"),
        ("DELETE", "/api/v2/services/ml_model"),
        ("POST", "/api/v2/services/ml_model/stop"),
        ("GET", "/api/v2/services/ml_model/shares"),
        ("GET", "/api/v2/teams/ml"),
        ("GET", "/api/v2/teams/ml/dashboard"),
        ("GET", "/api/v2/services?team=ml"),
    ] {
        let (s, b) = app.call(m, uri, Some(&web), vec![]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {uri}: {b}");
    }
    // Deploying into a team one is not in is a 404 too.
    assert_eq!(
        app.service(&web, "sneaky", "ml").await.0,
        StatusCode::NOT_FOUND
    );
    // The admin sees both teams' services; the ml admin sees the team.
    assert_eq!(
        names(&app.get("/api/v2/services", Some(&app.admin)).await.1),
        vec!["ml_model"]
    );
    let (s, team) = app.get("/api/v2/teams/ml", Some(&ml)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(team["your_role"], "admin");
    let (s, dash) = app.get("/api/v2/teams/ml/dashboard", Some(&ml)).await;
    assert_eq!(s, StatusCode::OK, "{dash}");
    assert_eq!(dash["by_status"]["Creating"], 1);
    assert_eq!(dash["total_instances"], 1);
    assert_eq!(dash["requests_last_hour"], 0);
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secret_and_revocable() {
    let app = app().await;
    let t = app.user("tia", "default", "viewer").await;
    assert_eq!(app.get("/api/v2/me", Some(&t)).await.1["user"], "tia");
    let (s, list) = app.get("/api/v2/users/tia/tokens", Some(&t)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(&t),
        "a listed token shows its secret"
    );
    // Users manage only their own tokens; others' do not exist for them.
    assert_eq!(
        app.get("/api/v2/users/admin/tokens", Some(&t)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v2/users", Some(&t)).await.0,
        StatusCode::FORBIDDEN
    );
    let id = list[0]["id"].as_i64().unwrap();
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v2/users/tia/tokens/{id}"),
            Some(&t),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v2/me", Some(&t)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_names_and_last_admin_removal_are_refused() {
    let app = app().await;
    let (s, b) = app
        .json(
            "POST",
            "/api/v2/users",
            &app.admin,
            json!({"name": "Bad Name"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["errors"][0]["path"], "name");
    let (s, _) = app
        .json(
            "POST",
            "/api/v2/teams",
            &app.admin,
            json!({"name": "default"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, b) = app
        .call(
            "DELETE",
            "/api/v2/teams/default/members/admin",
            Some(&app.admin),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("no admin left"),
        "{b}"
    );
    let (s, b) = app
        .json(
            "PUT",
            "/api/v2/teams/default/members/admin",
            &app.admin,
            json!({"role": "owner"}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {b}");
    assert_eq!(
        app.get("/api/v2/teams/default", Some(&app.admin)).await.1["members"][0]["role"],
        "admin"
    );
}

#[tokio::test]
async fn share_links_work_without_signing_in_until_revoked() {
    let app = app().await;
    let (s, b) = app.service(&app.admin, "shared_svc", "default").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, link) = app
        .call(
            "POST",
            "/api/v2/services/shared_svc/shares",
            Some(&app.admin),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    let token = link["token"].as_str().unwrap().to_string();
    assert_eq!(link["url"], format!("/s/{token}"));

    let (s, view) = app.get(&format!("/api/v2/shared/{token}"), None).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["summary"]["name"], "shared_svc");
    assert!(view.get("token").is_none() && !view.to_string().contains("model_path"));
    let (s, logs) = app.get(&format!("/api/v2/shared/{token}/logs"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(logs["lines"][0]["line"]
        .as_str()
        .unwrap()
        .contains("[OK] Service is being created"));
    // The link does not open the management API.
    assert_eq!(
        app.get("/api/v2/services/shared_svc", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (s, list) = app
        .get("/api/v2/services/shared_svc/shares", Some(&app.admin))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Listed without its token, which is stored only as a hash.
    assert!(!list.to_string().contains(&token), "{list}");
    assert_eq!(list[0]["id"], link["id"]);
    let stored = sqlite_text(&app, "SELECT token FROM share_links");
    assert!(
        !stored.contains(&token) && stored.contains(link["id"].as_str().unwrap()),
        "{stored}"
    );
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v2/services/shared_svc/shares/{token}"),
            Some(&app.admin),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for uri in [
        format!("/api/v2/shared/{token}"),
        format!("/api/v2/shared/{token}/logs"),
    ] {
        let (s, b) = app.get(&uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        assert!(b["error"].as_str().unwrap().contains("revoked"));
    }
    assert!(app
        .get("/api/v2/services/shared_svc/shares", Some(&app.admin))
        .await
        .1
        .as_array()
        .unwrap()
        .is_empty());
}

/// Strangers learn nothing of services: a prediction without the service's
/// token is refused alike whether the service exists or not (only a holder
/// of its token hears that it is not serving), and `/metrics` needs a
/// management token and shows a member only their teams' services.
#[tokio::test]
async fn strangers_learn_nothing_of_services_from_predictions_or_metrics() {
    let app = app().await;
    for t in ["ml", "web"] {
        let (s, b) = app
            .json("POST", "/api/v2/teams", &app.admin, json!({"name": t}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let ml = app.user("mia", "ml", "admin").await;
    let web = app.user("wes", "web", "deployer").await;
    assert_eq!(
        app.service(&ml, "hidden", "ml").await.0,
        StatusCode::CREATED
    );
    let (_, d) = app.get("/api/v2/services/hidden", Some(&ml)).await;
    let token = d["token"].as_str().unwrap().to_string();

    let body = br#"{"inputs":[]}"#.to_vec();
    for route in ["/api/predict/{}", "/v2/models/{}/infer"] {
        let mut answers = vec![];
        for name in ["hidden", "no_such_service"] {
            let uri = route.replace("{}", name);
            for t in [None, Some("wrong-token"), Some(ml.as_str())] {
                let (s, b) = app.call("POST", &uri, t, body.clone()).await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri} with {t:?}: {b}");
                answers.push(b["error"].as_str().unwrap().replace(name, "NAME"));
            }
        }
        answers.dedup();
        assert_eq!(answers.len(), 1, "{route}: {answers:?}");
        // The service's own token hears why it does not answer.
        let (s, b) = app
            .call(
                "POST",
                &route.replace("{}", "hidden"),
                Some(&token),
                body.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    }
    let (s, _) = app
        .call("GET", "/v2/models/no_such_service/ready", None, vec![])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let metrics = |t: Option<String>| {
        let app = &app;
        async move {
            let req = axum::http::Request::get("/metrics");
            let req = match t {
                Some(t) => req.header("authorization", format!("Bearer {t}")),
                None => req,
            };
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let resp = app
                .router
                .clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&text).into_owned())
        }
    };
    assert_eq!(metrics(None).await.0, StatusCode::UNAUTHORIZED);
    let series = "service=\"hidden\"";
    let (s, text) = metrics(Some(app.admin.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains(series), "{text}");
    let (_, text) = metrics(Some(ml.clone())).await;
    assert!(text.contains(series), "{text}");
    let (s, text) = metrics(Some(web.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !text.contains(series) && !text.contains("service=\"-\""),
        "{text}"
    );
    assert!(
        text.contains("process_"),
        "the server-wide series are kept: {text}"
    );
}

/// A service's secrets — its prediction token, a token in its config or its
/// versions, its share links — are a deployer's; a team admin may let the
/// team's viewers see them too.
#[tokio::test]
async fn viewers_see_secrets_only_when_their_team_lets_them() {
    let app = app().await;
    let (s, b) = app
        .json("POST", "/api/v2/teams", &app.admin, json!({"name": "ml"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let deployer = app.user("dana", "ml", "deployer").await;
    let viewer = app.user("vic", "ml", "viewer").await;
    let (s, up) = app.upload_mlp(&deployer).await;
    assert_eq!(s, StatusCode::OK, "{up}");
    let chosen = "a-token-chosen-in-the-config-1";
    let cfg = json!({"name": "svc", "model_path": up["model_path"], "processor": "onnx_cpu", "token": chosen});
    let (s, b) = app
        .json("POST", "/api/v2/services?team=ml", &deployer, cfg)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .call(
            "POST",
            "/api/v2/services/svc/shares",
            Some(&deployer),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let look = |who: String| {
        let app = &app;
        async move {
            let (_, d) = app.get("/api/v2/services/svc", Some(&who)).await;
            let (_, v) = app.get("/api/v2/services/svc/versions", Some(&who)).await;
            let (s, _) = app.get("/api/v2/services/svc/shares", Some(&who)).await;
            (d, v, s)
        }
    };
    let (d, v, s) = look(deployer.clone()).await;
    assert_eq!(d["token"], chosen);
    // The config's token became the service's: it is not kept in the
    // config (nor its versions) beside the sealed one.
    assert!(!v.to_string().contains(chosen), "{v}");
    assert!(!d["config"].to_string().contains(chosen), "{d}");
    assert_eq!(s, StatusCode::OK);

    let (d, v, s) = look(viewer.clone()).await;
    assert_eq!(d["token"], "", "{d}");
    assert!(d["config"].get("token").is_none_or(|t| t.is_null()), "{d}");
    assert!(!v.to_string().contains(chosen), "{v}");
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Only the team's admins change the setting.
    let on = json!({"viewers_see_secrets": true});
    let (s, _) = app
        .json("PATCH", "/api/v2/teams/ml", &deployer, on.clone())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, t) = app.json("PATCH", "/api/v2/teams/ml", &app.admin, on).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["viewers_see_secrets"], true);
    let (d, _, s) = look(viewer.clone()).await;
    assert_eq!(d["token"], chosen);
    assert_eq!(s, StatusCode::OK);
    // What the database holds: the token sealed, nowhere in the clear.
    let stored = sqlite_text(&app, "SELECT token FROM services")
        + &sqlite_text(&app, "SELECT config FROM services")
        + &sqlite_text(&app, "SELECT config FROM versions")
        + &sqlite_text(&app, "SELECT config FROM jobs");
    assert!(
        stored.starts_with("sealed1:") && !stored.contains(chosen),
        "{stored}"
    );
}

/// Every value of the first column `sql` selects from the app's SQLite
/// file, one a line (what is stored, as an intruder with the file sees it).
fn sqlite_text(app: &TestApp, sql: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print('\\n'.join(str(r[0]) for r in c.execute(sys.argv[2])))",
        ])
        .arg(app.dir.path().join("data/whetstone.db"))
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

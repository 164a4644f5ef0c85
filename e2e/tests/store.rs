//! The store against both of its databases: the embedded SQLite file and a
//! real PostgreSQL started here (`whetstone_e2e::postgres`). Every test runs
//! the same checks on each, so the one set of statements and the two
//! migration folders are held to one behaviour.

use std::collections::BTreeSet;
use std::sync::Arc;

use backend::control::store::{Dialect, ResolvedModel, Store, StoreError, VersionChange};
use shared::api::{ModelSignature, Role, ServiceStatus};
use shared::ServiceConfig;
use whetstone_e2e::postgres::Postgres;

/// The two stores of one test, and what keeps them alive.
struct Both {
    sqlite: Store,
    postgres: Store,
    _dir: tempfile::TempDir,
    _pg: Postgres,
}

async fn both() -> Both {
    let dir = tempfile::tempdir().unwrap();
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("whet");
    let sqlite = Store::open(&dir.path().join("whetstone.db")).await.unwrap();
    let postgres = Store::connect(&url).await.unwrap();
    assert_eq!(sqlite.dialect(), Dialect::Sqlite);
    assert_eq!(postgres.dialect(), Dialect::Postgres);
    Both {
        sqlite,
        postgres,
        _dir: dir,
        _pg: pg,
    }
}

impl Both {
    fn each(&self) -> [(&'static str, &Store); 2] {
        [("sqlite", &self.sqlite), ("postgres", &self.postgres)]
    }
}

fn config(name: &str, instances: u32) -> ServiceConfig {
    serde_json::from_value(serde_json::json!({
        "name": name, "model_path": "oss://bucket/m/", "processor": "onnx_cpu",
        "metadata": { "instance": instances }
    }))
    .unwrap()
}

fn model() -> ResolvedModel {
    ResolvedModel {
        dir: "models/abc".into(),
        file: "model.onnx".into(),
        sha256: "abc".into(),
        signature: ModelSignature {
            format: "onnx".into(),
            ..Default::default()
        },
    }
}

/// A lease that does not run out during a test.
const LEASE: i64 = i64::MAX / 2;

fn kinds(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_jobs_behave_alike() {
    let b = both().await;
    for (db, s) in b.each() {
        let job = s
            .create_service(&config("svc", 2), "cpu", "tok", &model(), "default", "ann")
            .await
            .unwrap();
        match s
            .create_service(&config("svc", 1), "cpu", "tok", &model(), "default", "ann")
            .await
        {
            Err(StoreError::Conflict(m)) => assert!(m.contains("svc"), "{db}: {m}"),
            other => panic!("{db}: a second service of one name: {other:?}"),
        }
        let row = s.get_service("svc").await.unwrap().unwrap();
        assert_eq!(row.status, ServiceStatus::Creating, "{db}");
        assert_eq!(row.instances, 2, "{db}");
        assert_eq!(row.config.metadata.instance, 2, "{db}");
        assert_eq!(row.signature.as_ref().unwrap().format, "onnx", "{db}");
        // A pending job refuses a redeploy.
        assert!(
            matches!(
                s.queue_redeploy("svc", &config("svc", 3), "cpu", None, VersionChange::Same)
                    .await,
                Err(StoreError::Conflict(_))
            ),
            "{db}"
        );
        // Only a worker of the job's kind claims it.
        assert!(
            s.claim_job(&kinds(&["gpu:T4"]), "n1", LEASE)
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );
        assert!(
            s.claim_job(&[], "n1", LEASE).await.unwrap().is_none(),
            "{db}"
        );
        assert_eq!(
            s.unclaimable_jobs(&kinds(&["gpu:T4"])).await.unwrap().len(),
            1,
            "{db}"
        );
        assert!(s
            .unclaimable_jobs(&kinds(&["gpu:T4", "cpu"]))
            .await
            .unwrap()
            .is_empty());
        let claimed = s
            .claim_job(&kinds(&["gpu:T4", "cpu"]), "n1", LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((claimed.id, claimed.attempts), (job, 1), "{db}");
        assert_eq!(claimed.config.metadata.instance, 2, "{db}");
        assert!(
            s.claim_job(&kinds(&["cpu"]), "n1", LEASE)
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );
        assert_eq!(s.interrupted_jobs().await.unwrap().len(), 1, "{db}");
        s.set_job_stage(job, "svc", "optimize").await.unwrap();
        s.finish_job(job, true, None).await.unwrap();
        assert_eq!(s.count_jobs("svc", "done").await.unwrap(), 1, "{db}");
        s.set_status("svc", ServiceStatus::Running, None, None)
            .await
            .unwrap();
        s.set_running("svc", 2, Some("artifacts/k")).await.unwrap();
        s.set_running("svc", 1, None).await.unwrap();
        let row = s.get_service("svc").await.unwrap().unwrap();
        assert_eq!(
            (row.running, row.artifact.as_deref()),
            (1, Some("artifacts/k")),
            "{db}"
        );
        // A redeploy of a running service is an update, with a new snapshot.
        let next = s
            .queue_redeploy(
                "svc",
                &config("svc", 3),
                "cpu",
                Some(&model()),
                VersionChange::New { author: "bob" },
            )
            .await
            .unwrap();
        assert!(next > job, "{db}");
        let row = s.get_service("svc").await.unwrap().unwrap();
        assert_eq!(
            (row.status, row.instances),
            (ServiceStatus::Updating, 3),
            "{db}"
        );
        assert!(s.has_pending_job("svc").await.unwrap(), "{db}");
        let again = s
            .claim_job(&kinds(&["cpu"]), "n1", LEASE)
            .await
            .unwrap()
            .unwrap();
        s.requeue_job(again.id).await.unwrap();
        let again = s
            .claim_job(&kinds(&["cpu"]), "n1", LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.attempts), (next, 2), "{db}");
        assert_eq!(again.config.metadata.instance, 3, "{db}");
        assert!(matches!(
            s.queue_redeploy("nope", &config("nope", 1), "cpu", None, VersionChange::Same)
                .await,
            Err(StoreError::NotFound(_))
        ));
        // Not while its deploy runs.
        assert!(
            matches!(s.delete_service("svc").await, Err(StoreError::Conflict(_))),
            "{db}"
        );
        s.finish_job(again.id, true, None).await.unwrap();
        s.delete_service("svc").await.unwrap();
        assert!(s.get_service("svc").await.unwrap().is_none(), "{db}");
        assert!(!s.has_pending_job("svc").await.unwrap(), "{db}");
        assert!(s.list_services().await.unwrap().is_empty(), "{db}");
    }
}

/// A node's lease on its job: renewed while held; once it runs out, exactly
/// one other node takes the job over, and the first can no longer renew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_and_taken_over_once() {
    let b = both().await;
    for (db, s) in b.each() {
        let job = s
            .create_service(&config("svc", 1), "cpu", "t", &model(), "default", "ann")
            .await
            .unwrap();
        let c = s
            .claim_job(&kinds(&["cpu"]), "a", 1_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.id, c.node.as_deref()), (job, Some("a")), "{db}");
        assert!(s.expired_jobs(500).await.unwrap().is_empty(), "{db}");
        assert!(s.renew_lease(job, "a", 2_000).await.unwrap(), "{db}");
        assert!(
            !s.renew_lease(job, "b", 9_000).await.unwrap(),
            "{db}: not b's"
        );
        assert!(s.expired_jobs(1_500).await.unwrap().is_empty(), "{db}");
        assert!(!s.take_over(job, 1_500, "b", 9_000).await.unwrap(), "{db}");
        // Node a stops renewing; at 2_500 its lease has run out.
        let expired = s.expired_jobs(2_500).await.unwrap();
        assert_eq!(expired.len(), 1, "{db}");
        assert_eq!(expired[0].node.as_deref(), Some("a"), "{db}");
        let (b1, b2) = tokio::join!(
            s.take_over(job, 2_500, "b", 9_000),
            s.take_over(job, 2_500, "c", 9_000)
        );
        assert!(
            b1.unwrap() ^ b2.unwrap(),
            "{db}: exactly one node takes it over"
        );
        assert!(
            !s.renew_lease(job, "a", 3_000).await.unwrap(),
            "{db}: a lost it"
        );
        s.requeue_job(job).await.unwrap();
        let again = s
            .claim_job(&kinds(&["cpu"]), "b", 20_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.attempts), (job, 2), "{db}");
        s.node_heartbeat("a", "127.0.0.1:1", &kinds(&["cpu"]), 1_000)
            .await
            .unwrap();
        s.node_heartbeat("b", "127.0.0.1:2", &kinds(&["cpu"]), 5_000)
            .await
            .unwrap();
        s.node_heartbeat("b", "127.0.0.1:3", &kinds(&["cpu", "gpu:T4"]), 6_000)
            .await
            .unwrap();
        let live = s.live_nodes(4_000).await.unwrap();
        assert_eq!(live.len(), 1, "{db}");
        assert_eq!(
            (
                live[0].id.as_str(),
                live[0].addr.as_str(),
                live[0].kinds.clone()
            ),
            ("b", "127.0.0.1:3", kinds(&["cpu", "gpu:T4"])),
            "{db}"
        );
    }
}

/// Versions: create makes version 1 and modify the next, each with its
/// config, model and author; a finished deploy records its artifact on the
/// version served; a switch serves an older version without making one;
/// delete forgets them — alike on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_behave_alike() {
    let b = both().await;
    for (db, s) in b.each() {
        let job = s
            .create_service(&config("v", 1), "cpu", "t", &model(), "default", "ann")
            .await
            .unwrap();
        s.finish_job(job, true, None).await.unwrap();
        s.set_running("v", 1, Some("k1")).await.unwrap();
        let job = s
            .queue_redeploy(
                "v",
                &config("v", 2),
                "cpu",
                Some(&model()),
                VersionChange::New { author: "bob" },
            )
            .await
            .unwrap();
        s.finish_job(job, true, None).await.unwrap();
        s.set_running("v", 2, Some("k2")).await.unwrap();
        let vs = s.versions("v").await.unwrap();
        let seen: Vec<_> = vs
            .iter()
            .map(|v| {
                (
                    v.version,
                    v.config.metadata.instance,
                    v.author.as_str(),
                    v.artifact.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [(1, 1, "ann", Some("k1")), (2, 2, "bob", Some("k2"))],
            "{db}"
        );
        assert_eq!(vs[0].model.as_ref().unwrap().sha256, model().sha256, "{db}");
        assert_eq!(
            s.get_service("v").await.unwrap().unwrap().current_version,
            2,
            "{db}"
        );
        // Scaling makes no version.
        let job = s
            .queue_redeploy("v", &config("v", 3), "cpu", None, VersionChange::Same)
            .await
            .unwrap();
        s.finish_job(job, true, None).await.unwrap();
        assert_eq!(s.latest_version("v").await.unwrap(), 2, "{db}");
        // Back to version 1: served, not copied; its artifact stays its own.
        let job = s
            .queue_redeploy(
                "v",
                &vs[0].config,
                "cpu",
                vs[0].model.as_ref(),
                VersionChange::Switch(1),
            )
            .await
            .unwrap();
        s.finish_job(job, true, None).await.unwrap();
        s.set_running("v", 1, Some("k1")).await.unwrap();
        let row = s.get_service("v").await.unwrap().unwrap();
        assert_eq!((row.current_version, row.instances), (1, 1), "{db}");
        assert_eq!(s.latest_version("v").await.unwrap(), 2, "{db}");
        assert_eq!(
            s.version("v", 2)
                .await
                .unwrap()
                .unwrap()
                .artifact
                .as_deref(),
            Some("k2"),
            "{db}"
        );
        assert!(s.version("v", 3).await.unwrap().is_none(), "{db}");
        // A modify after the rollback is the next number, served at once.
        s.queue_redeploy(
            "v",
            &config("v", 1),
            "cpu",
            Some(&model()),
            VersionChange::New { author: "ann" },
        )
        .await
        .unwrap();
        assert_eq!(
            s.get_service("v").await.unwrap().unwrap().current_version,
            3,
            "{db}"
        );
        // Deleted, and created again: versions start afresh.
        s.delete_service("v").await.unwrap();
        assert!(s.versions("v").await.unwrap().is_empty(), "{db}");
        s.create_service(&config("v", 1), "cpu", "t", &model(), "default", "cy")
            .await
            .unwrap();
        let vs = s.versions("v").await.unwrap();
        assert_eq!((vs.len(), vs[0].author.as_str()), (1, "cy"), "{db}");
    }
}

/// The autoscaler's load rows: one per service and node, replaced by the
/// next report, read back only when fresh, forgotten with the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_loads_behave_alike() {
    use backend::control::store::NodeLoad;
    let b = both().await;
    for (db, s) in b.each() {
        s.create_service(&config("l", 1), "cpu", "t", &model(), "default", "ann")
            .await
            .unwrap();
        let load = |qps: f64, cpu: Option<f64>| NodeLoad {
            qps,
            cpu,
            instances: 2,
        };
        s.report_load("l", "a", &load(1.0, Some(10.0)), 1_000)
            .await
            .unwrap();
        s.report_load("l", "a", &load(5.5, None), 2_000)
            .await
            .unwrap();
        s.report_load("l", "b", &load(7.0, Some(40.0)), 500)
            .await
            .unwrap();
        assert_eq!(
            s.service_loads("l", 1_000).await.unwrap(),
            vec![load(5.5, None)],
            "{db}"
        );
        assert_eq!(s.service_loads("l", 0).await.unwrap().len(), 2, "{db}");
        s.delete_service("l").await.unwrap();
        assert!(s.service_loads("l", 0).await.unwrap().is_empty(), "{db}");
    }
}

/// Instances placed on nodes: a node's share, the states it reports (a
/// stale report about another artifact changes nothing), the slots of a
/// dead node moved exactly once, forwarding addresses, and a restarted
/// node taking its predecessor's slots — alike on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_behave_alike() {
    let b = both().await;
    for (db, s) in b.each() {
        s.create_service(&config("p", 3), "cpu", "t", &model(), "default", "ann")
            .await
            .unwrap();
        s.node_heartbeat("a", "10.0.0.1:80", &kinds(&["cpu"]), 1_000)
            .await
            .unwrap();
        s.node_heartbeat("b", "10.0.0.2:80", &kinds(&["cpu"]), 9_000)
            .await
            .unwrap();
        let nodes = ["a", "b", "a"].map(String::from);
        s.place("p", "k1", &nodes).await.unwrap();
        let mut share = s.node_shares("a").await.unwrap();
        assert_eq!(share.len(), 1, "{db}");
        let a = share.remove(0);
        assert_eq!(
            (a.artifact.as_str(), a.count, a.running, a.failed),
            ("k1", 2, 0, 0),
            "{db}"
        );
        s.set_slots("p", "a", "k1", "running", None).await.unwrap();
        s.set_slots("p", "b", "k0", "running", None).await.unwrap();
        let svc = s.get_service("p").await.unwrap().unwrap();
        assert_eq!(
            svc.running, 2,
            "{db}: b's report was about another artifact"
        );
        assert_eq!(
            s.host_addrs("p", "b", 500).await.unwrap(),
            vec![("10.0.0.1:80".to_string(), true)],
            "{db}"
        );
        s.set_slots("p", "b", "k1", "failed", Some("no GPU"))
            .await
            .unwrap();
        let placed = s.placements("p").await.unwrap();
        assert_eq!(placed[1].error.as_deref(), Some("no GPU"), "{db}");
        assert!(
            s.host_addrs("p", "a", 500).await.unwrap().is_empty(),
            "{db}"
        );

        // a stops heartbeating: its two slots are orphans, each moved once.
        let orphans = s.orphaned_slots(5_000).await.unwrap();
        assert_eq!(
            orphans.iter().map(|p| p.slot).collect::<Vec<_>>(),
            vec![0, 2],
            "{db}"
        );
        assert!(s.move_slot("p", 0, "a", "b").await.unwrap(), "{db}");
        assert!(
            !s.move_slot("p", 0, "a", "b").await.unwrap(),
            "{db}: moved once"
        );
        assert_eq!(
            s.get_service("p").await.unwrap().unwrap().running,
            1,
            "{db}"
        );
        assert_eq!(s.slots_per_node().await.unwrap()["b"], 2, "{db}");

        // A new process at a's address takes a's remaining slot (on
        // SQLite, the one node's database, every slot).
        s.node_heartbeat("a2", "10.0.0.1:80", &kinds(&["cpu"]), 9_500)
            .await
            .unwrap();
        let (moved, nodes) = match s.dialect() {
            Dialect::Postgres => (1, vec!["b", "b", "a2"]),
            Dialect::Sqlite => (3, vec!["a2", "a2", "a2"]),
        };
        assert_eq!(
            s.adopt_slots("a2", "10.0.0.1:80").await.unwrap(),
            moved,
            "{db}"
        );
        let placed = s.placements("p").await.unwrap();
        assert_eq!(
            placed.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(),
            nodes,
            "{db}"
        );
        assert!(
            s.live_nodes(0).await.unwrap().iter().all(|n| n.id != "a"),
            "{db}"
        );

        s.unplace("p").await.unwrap();
        assert!(s.placements("p").await.unwrap().is_empty(), "{db}");
        assert_eq!(
            s.get_service("p").await.unwrap().unwrap().running,
            0,
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_share_links_behave_alike() {
    let b = both().await;
    for (db, s) in b.each() {
        // The migrations made the site admin and the default team.
        let admin = s.user("admin").await.unwrap().unwrap();
        assert!(admin.site_admin, "{db}");
        assert_eq!(
            s.teams().await.unwrap(),
            vec!["default".to_string()],
            "{db}"
        );
        let t1 = s.insert_token(admin.id, "admin", "h1").await.unwrap();
        let t2 = s.insert_token(admin.id, "ci", "h2").await.unwrap();
        assert!(t2 > t1, "{db}");
        let (user, token) = s.token_user("h2").await.unwrap().unwrap();
        assert_eq!((user.id, token), (admin.id, t2), "{db}");
        assert!(s.revoke_token(admin.id, t2).await.unwrap(), "{db}");
        assert!(s.token_user("h2").await.unwrap().is_none(), "{db}");
        assert_eq!(s.token_count().await.unwrap(), 2, "{db}");
        let alice = s.create_user("alice", false).await.unwrap();
        assert!(!alice.site_admin, "{db}");
        assert!(matches!(
            s.create_user("alice", false).await,
            Err(StoreError::Conflict(_))
        ));
        s.create_team("ml", alice.id).await.unwrap();
        assert!(matches!(
            s.create_team("ml", admin.id).await,
            Err(StoreError::Conflict(_))
        ));
        s.set_membership("ml", admin.id, Some(Role::Viewer))
            .await
            .unwrap();
        // The last admin cannot leave, and nothing of the attempt stays.
        assert!(matches!(
            s.set_membership("ml", alice.id, None).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.members("ml").await.unwrap().len(), 2, "{db}");
        let link = s.create_share("s_sh1", "svc", "alice").await.unwrap();
        assert_eq!(link.url.as_deref(), Some("/s/s_sh1"), "{db}");
        assert_eq!(
            s.shared_service("s_sh1").await.unwrap().as_deref(),
            Some("svc")
        );
        // Listed by id, never with the token (only its hash is kept).
        let listed = s.shares("svc").await.unwrap();
        assert_eq!(listed.len(), 1, "{db}");
        assert_eq!(
            (listed[0].token.as_ref(), listed[0].url.as_ref()),
            (None, None),
            "{db}"
        );
        assert_eq!(listed[0].id, link.id, "{db}");
        assert!(
            !s.revoke_share("svc", "0123").await.unwrap(),
            "{db}: a short id matched"
        );
        assert!(s.revoke_share("svc", &link.id).await.unwrap(), "{db}");
        assert!(!s.revoke_share("svc", "s_sh1").await.unwrap(), "{db}");
        assert!(s.shared_service("s_sh1").await.unwrap().is_none(), "{db}");
        // By its token too.
        s.create_share("s_sh2", "svc", "alice").await.unwrap();
        assert!(s.revoke_share("svc", "s_sh2").await.unwrap(), "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_artifacts_behave_alike() {
    let b = both().await;
    for (db, s) in b.each() {
        let job = s
            .create_service(&config("svc", 1), "cpu", "t", &model(), "default", "ann")
            .await
            .unwrap();
        let mut ids = vec![];
        for i in 0..5 {
            ids.push(
                s.append_log("svc", Some(job), &format!("line {i}"))
                    .await
                    .unwrap()
                    .expect("a line of a job that exists is stored")
                    .id,
            );
        }
        s.append_log("other", None, "x").await.unwrap();
        // A line of a job that is not there (its service deleted) is dropped.
        assert!(
            s.append_log("svc", Some(job + 1000), "stray")
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{db}: {ids:?}");
        let after = s.logs_after("svc", ids[1], 2).await.unwrap();
        assert_eq!(
            after.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line 2", "line 3"],
            "{db}"
        );
        // Retention: all but the last 2 lines of each log, and none
        // older than the cut-off.
        assert_eq!(
            s.prune_logs("1970-01-01T00:00:00.000Z", 2).await.unwrap(),
            3,
            "{db}"
        );
        let kept = s.logs_after("svc", 0, 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line 3", "line 4"],
            "{db}"
        );
        assert_eq!(
            s.prune_logs("9999-01-01T00:00:00.000Z", 2).await.unwrap(),
            3,
            "{db}"
        );
        // What the collector must keep: the service's model and the upload
        // its config names.
        let refs = s.referenced().await.unwrap();
        assert!(refs.model_dirs.contains("models/abc"), "{db}: {refs:?}");
        assert!(
            s.team_storage("default")
                .await
                .unwrap()
                .model_dirs
                .contains("models/abc"),
            "{db}"
        );
        assert!(s.get_artifact("k").await.unwrap().is_none(), "{db}");
        s.put_artifact("k", "artifacts/a", "sha", false, None)
            .await
            .unwrap();
        // Recording a key again replaces its row.
        s.put_artifact("k", "artifacts/b", "sha", true, Some("{}"))
            .await
            .unwrap();
        let a = s.get_artifact("k").await.unwrap().unwrap();
        assert_eq!(
            (a.dir.as_str(), a.optimized, a.report.as_deref()),
            ("artifacts/b", true, Some("{}")),
            "{db}"
        );
        assert_eq!(s.count_artifacts(true).await.unwrap(), 1, "{db}");
        assert_eq!(s.count_artifacts(false).await.unwrap(), 0, "{db}");
    }
}

/// Many workers claiming at once (nodes sharing one database): every job is
/// claimed exactly once, none is lost, and racing creates of one name leave
/// one service and a conflict for the rest — never a database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_and_creates_are_exclusive() {
    let b = both().await;
    for (db, s) in b.each() {
        let jobs = 24;
        for i in 0..jobs {
            s.create_service(
                &config(&format!("s{i}"), 1),
                "cpu",
                "t",
                &model(),
                "default",
                "ann",
            )
            .await
            .unwrap();
        }
        let s = Arc::new(s.clone());
        let claimers: Vec<_> = (0..6)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut got = vec![];
                    while let Some(j) = s.claim_job(&kinds(&["cpu"]), "n1", LEASE).await.unwrap() {
                        got.push(j.id);
                    }
                    got
                })
            })
            .collect();
        let mut all = vec![];
        for c in claimers {
            all.extend(c.await.unwrap());
        }
        let distinct: BTreeSet<_> = all.iter().copied().collect();
        assert_eq!(all.len(), jobs, "{db}: claimed {all:?}");
        assert_eq!(distinct.len(), jobs, "{db}: a job claimed twice: {all:?}");

        let racers: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.create_service(&config("twin", 1), "cpu", "t", &model(), "default", "ann")
                        .await
                })
            })
            .collect();
        let (mut ok, mut conflicts) = (0, 0);
        for r in racers {
            match r.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict(_)) => conflicts += 1,
                Err(e) => panic!("{db}: a racing create failed with {e}"),
            }
        }
        assert_eq!((ok, conflicts), (1, 7), "{db}");
    }
}

/// A delete that meets a worker's claim: either the claim comes first and
/// the delete is refused (the service and its running job are kept), or the
/// delete comes first and nothing is left to claim. Never a deleted service
/// with a worker deploying it, whose log lines would land in the log of a
/// later service of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_never_races_a_claim() {
    let b = both().await;
    for (db, s) in b.each() {
        // Claimed first: the delete is refused, and the worker's lines keep
        // their service.
        let job = s
            .create_service(&config("gone", 1), "cpu", "t", &model(), "default", "ann")
            .await
            .unwrap();
        let claimed = s.claim_job(&kinds(&["cpu"]), "n1", LEASE).await.unwrap();
        assert_eq!(claimed.map(|j| j.id), Some(job), "{db}");
        match s.delete_service("gone").await {
            Err(StoreError::Conflict(m)) => assert!(m.contains("running"), "{db}: {m}"),
            other => panic!("{db}: a delete beside a running deploy gave {other:?}"),
        }
        assert!(s.get_service("gone").await.unwrap().is_some(), "{db}");
        s.finish_job(job, false, Some("stopped")).await.unwrap();
        s.delete_service("gone").await.unwrap();
        assert!(
            s.append_log("gone", Some(job), "[ERROR] late")
                .await
                .unwrap()
                .is_none(),
            "{db}: a deleted job's line was stored"
        );
        // Many rounds of a delete and a claim at once: each ends one way or
        // the other, and a later service of the name has a clean log.
        let s = Arc::new(s.clone());
        for round in 0..20 {
            let name = format!("race{round}");
            s.create_service(&config(&name, 1), "cpu", "t", &model(), "default", "ann")
                .await
                .unwrap();
            let (claimer, deleter) = (s.clone(), s.clone());
            let claim =
                tokio::spawn(async move { claimer.claim_job(&kinds(&["cpu"]), "n1", LEASE).await });
            let n = name.clone();
            let delete = tokio::spawn(async move { deleter.delete_service(&n).await });
            let claimed = claim.await.unwrap().unwrap();
            match (delete.await.unwrap(), claimed) {
                (Ok(()), None) => {}
                (Err(StoreError::Conflict(_)), Some(j)) => {
                    assert!(s.get_service(&name).await.unwrap().is_some(), "{db}");
                    s.finish_job(j.id, true, None).await.unwrap();
                    s.delete_service(&name).await.unwrap();
                }
                (deleted, claimed) => panic!(
                    "{db}: round {round}: the delete gave {deleted:?} and the claim {claimed:?}"
                ),
            }
            let later = s
                .create_service(&config(&name, 1), "cpu", "t", &model(), "default", "ann")
                .await
                .unwrap();
            assert!(s.logs_after(&name, 0, 10).await.unwrap().is_empty(), "{db}");
            s.finish_job(later, true, None).await.unwrap();
            s.delete_service(&name).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_database_urls_are_named_not_attempted() {
    for url in ["mysql://x@h/db", "", "/tmp/whet.db"] {
        match Store::connect(url).await {
            Err(StoreError::Url(m)) => assert!(m.contains("--database"), "{m}"),
            other => panic!("{url}: {:?}", other.err()),
        }
    }
    // A password is not repeated back.
    let e = Dialect::of_url("pgsql://u:secret@h/db").unwrap_err();
    assert!(!e.contains("secret"), "{e}");
    // Nothing listens there: an error, not a hang or a panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        Store::connect(&format!("postgres://u:secret@127.0.0.1:{port}/db")),
    )
    .await
    .expect("connect gives up");
    let e = r.err().expect("no server").to_string();
    assert!(!e.contains("secret"), "{e}");
}

/// `whet serve --database postgres://…`, for real: a deploy, predictions, and
/// a restart that finds the service in PostgreSQL and serves it again.
#[test]
fn whet_serve_runs_on_postgresql_and_comes_back_from_it() {
    use whetstone_e2e::Server;
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut server = Server::start(&data, &["--database", &url]);
    let out = server
        .cli(&["example-model", work.path().join("m").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = work.path().join("m/service.json");
    let out = server
        .cli(&["create", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name: String =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&cfg).unwrap()).unwrap()
            ["name"]
            .as_str()
            .unwrap()
            .to_string();
    let predict = |server: &Server| {
        let (s, v) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        assert_eq!(s, 200, "{v}");
        let token = v["token"].as_str().unwrap().to_string();
        server.http(
            "POST",
            &format!("/api/predict/{name}"),
            Some(&token),
            br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.1,0.2,0.3,0.4]}]}"#,
        )
    };
    let (s, first) = predict(&server);
    assert_eq!(s, 200, "{first}");
    // The SQLite file the embedded default would have made is not there.
    assert!(!data.join("whetstone.db").exists());

    server.kill();
    let server = Server::start(&data, &["--database", &url]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (s, body) = predict(&server);
        if s == 200 {
            assert_eq!(body, first);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not serving again after a restart: {s} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn whet_serve_refuses_a_database_url_it_cannot_use() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(whetstone_e2e::whet_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(work.path())
        .args(["--database", "mysql://root:hunter2@127.0.0.1/whet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--database") && err.contains("postgres://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

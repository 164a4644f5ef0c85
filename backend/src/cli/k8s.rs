//! `whet export k8s`: Kubernetes manifests for N `whet serve` nodes that
//! share an external PostgreSQL and S3-compatible store — a Secret (the
//! database URL, the S3 keys, the admin token), a ConfigMap (the store and
//! its endpoint), a Deployment (probes on the KServe health routes,
//! resources from the node's settings) and a Service (HTTP, and KServe v2
//! over gRPC). Printed as a YAML
//! stream whose documents are JSON (JSON is YAML), for `kubectl apply -f -`.

use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct K8sArgs {
    /// The image that holds `whet`, `whet-runner`, ONNX Runtime (and libtorch
    /// for TorchScript services).
    #[arg(long)]
    pub image: String,
    /// Nodes: the Deployment's replicas.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Name of every object, and their `app` label.
    #[arg(long, default_value = "whet")]
    pub name: String,
    /// Namespace of every object (default: kubectl's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The PostgreSQL every node shares (`postgres://USER:PASSWORD@HOST:PORT/DB`); it goes into the Secret.
    #[arg(long, env = "WHET_DATABASE", hide_env_values = true)]
    pub database: String,
    /// The object store every node shares: `s3://BUCKET/PREFIX`.
    #[arg(long, env = "WHET_STORE")]
    pub store: String,
    /// CPU cores per node (request and limit).
    #[arg(long, default_value_t = 4)]
    pub cpu: u32,
    /// Memory per node in MiB (request and limit); a model-touching child may use half of it.
    #[arg(long, default_value_t = 16384)]
    pub memory_mib: u64,
    /// Deploy workers per node.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// How long a node's lease on a deploy job lasts (`whet serve --job-lease`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub job_lease: std::time::Duration,
}

/// What goes into the Secret, read from the environment of `whet export`
/// (a placeholder when unset, to be filled before applying).
const SECRET_ENV: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "WHET_ADMIN_TOKEN",
];
/// What goes into the ConfigMap when set.
const CONFIG_ENV: [&str; 3] = ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ALLOW_HTTP"];
pub const PLACEHOLDER: &str = "REPLACE-ME";
const PORT: u16 = 8080;
/// KServe v2 over gRPC (`whet serve --grpc-addr`), for services that set
/// `metadata.enable_grpc`.
const GRPC_PORT: u16 = 8081;
const DATA: &str = "/var/lib/whet";

/// A DNS-1123 label, as Kubernetes requires of names.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The manifests, or what is wrong with the arguments (naming the flag).
pub fn manifests(
    args: &K8sArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Value>, String> {
    if !dns_label(&args.name) {
        return Err(format!(
            "--name '{}': expected a DNS label (lowercase letters, digits and '-', at most 63)",
            args.name
        ));
    }
    if let Some(ns) = &args.namespace {
        if !dns_label(ns) {
            return Err(format!("--namespace '{ns}': expected a DNS label"));
        }
    }
    if !(args.database.starts_with("postgres://") || args.database.starts_with("postgresql://")) {
        return Err(
            "--database: several nodes share a PostgreSQL; expected postgres://USER:PASSWORD@HOST:PORT/DB"
                .into(),
        );
    }
    let bucket = args.store.strip_prefix("s3://").unwrap_or_default();
    if bucket.split('/').next().unwrap_or_default().is_empty() {
        return Err(format!(
            "--store '{}': nodes on Kubernetes share an S3-compatible store; expected s3://BUCKET/PREFIX",
            args.store
        ));
    }
    if args.nodes == 0 || args.cpu == 0 || args.memory_mib < 512 {
        return Err("--nodes and --cpu must be at least 1, --memory-mib at least 512".into());
    }
    let name = args.name.as_str();
    let labels = json!({ "app": name, "app.kubernetes.io/name": "whetstone" });
    let meta = |suffix: &str| {
        let mut m = json!({ "name": format!("{name}{suffix}"), "labels": labels });
        if let Some(ns) = &args.namespace {
            m["namespace"] = json!(ns);
        }
        m
    };
    let mut secret = serde_json::Map::new();
    secret.insert("WHET_DATABASE".into(), json!(args.database));
    for k in SECRET_ENV {
        secret.insert(
            k.into(),
            json!(env(k).unwrap_or_else(|| PLACEHOLDER.into())),
        );
    }
    // Every node seals prediction tokens with one key: the one in the
    // environment, or a new one made here.
    let key = env("WHET_SECRET_KEY").unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>()));
    secret.insert("WHET_SECRET_KEY".into(), json!(key));
    let mut config = serde_json::Map::new();
    config.insert("WHET_STORE".into(), json!(args.store));
    config.insert("WHET_LOG".into(), json!("info"));
    for k in CONFIG_ENV {
        if let Some(v) = env(k) {
            config.insert(k.into(), json!(v));
        }
    }
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": { "path": path, "port": "http" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    let resources = json!({
        "cpu": args.cpu.to_string(),
        "memory": format!("{}Mi", args.memory_mib),
    });
    let lease = humantime::format_duration(args.job_lease).to_string();
    let container = json!({
        "name": "whet",
        "image": args.image,
        "args": [
            "serve",
            "--addr", format!("0.0.0.0:{PORT}"),
            "--grpc-addr", format!("0.0.0.0:{GRPC_PORT}"),
            "--data", DATA,
            "--workers", args.workers.to_string(),
            "--child-memory-mb", (args.memory_mib / 2).to_string(),
            "--job-lease", lease,
        ],
        "ports": [
            { "name": "http", "containerPort": PORT, "protocol": "TCP" },
            { "name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP" },
        ],
        // Other nodes forward predictions to this pod at its own address.
        "env": [
            { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
            { "name": "WHET_ADVERTISE", "value": format!("$(POD_IP):{PORT}") },
        ],
        "envFrom": [
            { "configMapRef": { "name": format!("{name}-config") } },
            { "secretRef": { "name": format!("{name}-secrets") } },
        ],
        "readinessProbe": probe("/v2/health/ready", 5, 3),
        "livenessProbe": probe("/v2/health/live", 10, 6),
        "startupProbe": probe("/v2/health/live", 2, 90),
        "resources": { "requests": resources, "limits": resources },
        "volumeMounts": [{ "name": "data", "mountPath": DATA }],
    });
    Ok(vec![
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta("-secrets"),
            "type": "Opaque",
            "stringData": secret,
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("-config"),
            "data": config,
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(""),
            "spec": {
                "replicas": args.nodes,
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        // A node that is stopped hands its deploy over after
                        // one lease; give it that long to finish a request.
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container],
                        // The data folder is a node's cache: artifacts and
                        // uploads it fetched from the store, runner sockets.
                        "volumes": [{ "name": "data", "emptyDir": {} }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(""),
            "spec": {
                "selector": { "app": name },
                "ports": [
                    { "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" },
                    // HTTP/2 without TLS, so meshes and ingresses route it as gRPC.
                    {
                        "name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                        "appProtocol": "kubernetes.io/h2c",
                    },
                ],
            },
        }),
    ])
}

/// Prints the manifests as one YAML stream; exit code 2 on bad arguments.
pub fn run(args: &K8sArgs) -> i32 {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match manifests(args, &env) {
        Ok(docs) => {
            for doc in docs {
                println!("---");
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            let unset: Vec<&str> = SECRET_ENV
                .into_iter()
                .filter(|k| env(k).is_none())
                .collect();
            if !unset.is_empty() {
                eprintln!(
                    "note: {} unset here; the Secret holds {PLACEHOLDER} for them — fill them in before applying",
                    unset.join(", ")
                );
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        k8s: K8sArgs,
    }

    fn args(extra: &[&str]) -> K8sArgs {
        let mut argv = vec![
            "x",
            "--image",
            "registry.example.com/whet:1",
            "--database",
            "postgres://whet:pw@db:5432/whet",
            "--store",
            "s3://models/prod",
        ];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).k8s
    }

    #[test]
    fn resources_and_replicas_come_from_the_settings() {
        let a = args(&["--nodes", "3", "--cpu", "8", "--memory-mib", "32768"]);
        let docs = manifests(&a, &|k| (k == "AWS_REGION").then(|| "eu-west-1".into())).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Secret", "ConfigMap", "Deployment", "Service"]);
        let spec = &docs[2]["spec"];
        assert_eq!(spec["replicas"], 3);
        let c = &spec["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["memory"], "32768Mi");
        assert_eq!(c["resources"]["requests"]["cpu"], "8");
        let argv: Vec<_> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            argv.windows(2).any(|w| w == ["--child-memory-mb", "16384"]),
            "{argv:?}"
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/v2/health/ready");
        // The gRPC listener is on, exposed by the pod and the Service.
        assert!(
            argv.windows(2)
                .any(|w| w == ["--grpc-addr", "0.0.0.0:8081"]),
            "{argv:?}"
        );
        assert_eq!(c["ports"][1]["name"], "grpc");
        let svc_port = &docs[3]["spec"]["ports"][1];
        assert_eq!(
            (&svc_port["port"], &svc_port["targetPort"]),
            (&serde_json::json!(8081), &serde_json::json!("grpc"))
        );
        assert_eq!(
            docs[0]["stringData"]["WHET_DATABASE"],
            "postgres://whet:pw@db:5432/whet"
        );
        assert_eq!(docs[0]["stringData"]["AWS_SECRET_ACCESS_KEY"], PLACEHOLDER);
        // One sealing key for every node: 64 hex digits.
        let key = docs[0]["stringData"]["WHET_SECRET_KEY"].as_str().unwrap();
        assert!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        assert_eq!(docs[1]["data"]["AWS_REGION"], "eu-west-1");
        assert_eq!(docs[1]["data"]["WHET_STORE"], "s3://models/prod");
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let none = |_: &str| None;
        type Change = fn(&mut K8sArgs);
        let cases: [(Change, &str); 5] = [
            (|a| a.name = "Whet".into(), "--name"),
            (|a| a.database = "sqlite:///x".into(), "--database"),
            (|a| a.store = "/mnt/shared".into(), "--store"),
            (|a| a.store = "s3://".into(), "--store"),
            (|a| a.nodes = 0, "--nodes"),
        ];
        for (change, flag) in cases {
            let mut a = args(&[]);
            change(&mut a);
            let e = manifests(&a, &none).unwrap_err();
            assert!(e.contains(flag), "{flag}: {e}");
        }
    }
}

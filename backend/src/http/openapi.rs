//! The OpenAPI 3.1 description of the whole HTTP API, served at
//! `GET /api/openapi.json`. OpenAPI 3.1 schemas are JSON Schema 2020-12, which
//! is what schemars generates from the very types the handlers use, so the
//! component schemas cannot drift from the code; the paths are listed here.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};
use shared::api::{
    ApiError, InferRequest, InferResponse, LogEvent, LogPage, ScaleRequest, ServiceDetail,
    ServiceSummary, UploadResponse,
};
use shared::ServiceConfig;

fn op(summary: &str, tag: &str, security: &str, responses: Value) -> Value {
    let mut o = json!({ "summary": summary, "tags": [tag], "responses": responses });
    if !security.is_empty() {
        o["security"] = json!([{ security: [] }]);
    }
    o
}

fn body(schema: &Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

/// `/api/predict` bodies: KServe v2 JSON, or the EAS SDK's protobuf.
fn eas_body(schema: &Value) -> Value {
    json!({ "required": true, "content": {
        "application/json": { "schema": schema },
        "application/octet-stream": {
            "schema": { "type": "string", "contentMediaType": "application/x-protobuf" },
            "description": "EAS SDK TFRequest or TorchRequest PredictRequest protobuf (a TorchRequest optionally snappy-compressed); the SDK sends it, and KServe v2 JSON, as application/octet-stream",
        },
    } })
}

/// KServe v2 bodies: JSON, or the binary tensor extension.
fn kserve_body(schema: &Value) -> Value {
    json!({ "required": true, "content": {
        "application/json": { "schema": schema },
        "application/octet-stream": {
            "schema": { "type": "string", "contentMediaType": "application/octet-stream" },
            "description": "binary tensor extension: the JSON request (Inference-Header-Content-Length bytes), then the raw little-endian data of each input with parameters.binary_data_size, in order",
        },
    } })
}

fn ok_or_raw(description: &str, schema: &Value, raw: &str) -> (String, Value) {
    (
        "200".to_string(),
        json!({ "description": description, "content": {
            "application/json": { "schema": schema },
            "application/octet-stream": { "schema": { "type": "string" }, "description": raw },
        } }),
    )
}

fn ok(code: &str, description: &str, schema: &Value) -> (String, Value) {
    (
        code.to_string(),
        json!({ "description": description, "content": { "application/json": { "schema": schema } } }),
    )
}

fn plain(code: &str, description: &str) -> (String, Value) {
    (code.to_string(), json!({ "description": description }))
}

fn responses(items: Vec<(String, Value)>, error: &Value, errors: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in items {
        m.insert(k, v);
    }
    for (code, why) in errors {
        m.insert(
            code.to_string(),
            json!({ "description": why, "content": { "application/json": { "schema": error } } }),
        );
    }
    Value::Object(m)
}

/// What any operation may answer before its handler runs, documented on
/// each: 401 without a valid token where one is needed, 400 when a path or
/// query parameter or the JSON body cannot be read as declared, 415 when a
/// JSON body is sent as another content type, 422 when it is JSON of
/// another shape (every such answer is an `ApiError`, like the handlers').
fn readable_or_not(paths: &mut Value, error: &Value) {
    let answer = |why: &str| json!({ "description": why, "content": { "application/json": { "schema": error } } });
    for item in paths
        .as_object_mut()
        .into_iter()
        .flat_map(|m| m.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let takes_params = op
                .get("parameters")
                .is_some_and(|p| p.as_array().is_some_and(|a| !a.is_empty()));
            let json_body = op
                .pointer("/requestBody/content/application~1json")
                .is_some();
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            if takes_params || json_body {
                responses.entry("400").or_insert_with(|| {
                    answer("a parameter or the body cannot be read as declared")
                });
            }
            if json_body {
                responses
                    .entry("415")
                    .or_insert_with(|| answer("the body is not sent as application/json"));
                responses
                    .entry("422")
                    .or_insert_with(|| answer("the body is JSON of another shape"));
            }
            if secured {
                responses
                    .entry("401")
                    .or_insert_with(|| answer("missing or invalid token"));
            }
        }
    }
}

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" }, "description": "service name" })
}

fn version_param() -> Value {
    json!({ "name": "version", "in": "path", "required": true, "schema": { "type": "string" }, "description": "model version (each service serves version 1)" })
}

/// The document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas/".into())
        .into_generator();
    let schema = |v: schemars::Schema| v.to_value();
    let config = schema(generator.subschema_for::<ServiceConfig>());
    let detail = schema(generator.subschema_for::<ServiceDetail>());
    let summaries = schema(generator.subschema_for::<Vec<ServiceSummary>>());
    let error = schema(generator.subschema_for::<ApiError>());
    let scale = schema(generator.subschema_for::<ScaleRequest>());
    let versions = schema(generator.subschema_for::<Vec<shared::api::ServiceVersion>>());
    let rollback = schema(generator.subschema_for::<shared::api::RollbackRequest>());
    let rotated = schema(generator.subschema_for::<shared::api::RotatedToken>());
    let gc_report = schema(generator.subschema_for::<shared::api::GcReport>());
    let split = schema(generator.subschema_for::<shared::api::TrafficSplit>());
    let split_req = schema(generator.subschema_for::<shared::api::TrafficRequest>());
    let promote = schema(generator.subschema_for::<shared::api::PromoteRequest>());
    let samples = schema(generator.subschema_for::<Vec<shared::api::RequestSample>>());
    let minutes = schema(generator.subschema_for::<Vec<shared::api::MinuteStats>>());
    let config_check = schema(generator.subschema_for::<shared::api::ConfigCheck>());
    let page = schema(generator.subschema_for::<LogPage>());
    let event = schema(generator.subschema_for::<LogEvent>());
    let upload = schema(generator.subschema_for::<UploadResponse>());
    let infer_req = schema(generator.subschema_for::<InferRequest>());
    let infer_resp = schema(generator.subschema_for::<InferResponse>());
    let resource_groups =
        schema(generator.subschema_for::<crate::control::resources::ResourceGroupsInfo>());
    let accounts = AccountSchemas::new(&mut generator);
    let schemas = generator.take_definitions(true);

    let mgmt = "managementToken";
    let svc = "serviceToken";
    let e = &error;
    let svc_errs = [
        ("401", "missing or invalid token"),
        ("404", "no such service"),
    ];
    let deploy_errs = [
        ("401", "missing or invalid token"),
        ("403", "needs the deployer role in the service's team"),
        ("404", "no such service"),
        ("409", "a deploy is in progress"),
        ("422", "the config has problems (each with its JSON path)"),
    ];
    let predict_errs = [
        (
            "400",
            "malformed request, or an input with the wrong name, datatype or shape",
        ),
        ("401", "missing or wrong service token"),
        ("404", "no such service"),
        ("503", "the service is not serving"),
    ];

    let with_name = |mut o: Value| {
        o["parameters"] = json!([name_param()]);
        o
    };
    let with_version = |mut o: Value| {
        o["parameters"] = json!([name_param(), version_param()]);
        o
    };

    let paths = json!({
        "/api/v2/services": {
            "get": {
                "summary": "List the services of the caller's teams",
                "tags": ["services"], "security": [{ mgmt: [] }],
                "parameters": [{ "name": "team", "in": "query", "schema": { "type": "string" }, "description": "only this team's services" }],
                "responses": responses(vec![ok("200", "services", &summaries)], e, &[("401", "missing or invalid token"), ("404", "no such team (or not a member)")]),
            },
            "post": {
                "requestBody": body(&config),
                "summary": "Create (deploy) a service from an EAS service config",
                "tags": ["services"], "security": [{ mgmt: [] }],
                "parameters": [{ "name": "team", "in": "query", "schema": { "type": "string" }, "description": "the team the service belongs to (default: the caller's first team where they may deploy)" }],
                "responses": responses(vec![ok("201", "the service; the deploy runs in the background", &detail)], e, &[("401", "missing or invalid token"), ("403", "needs the deployer role in the team"), ("404", "no such team (or not a member)"), ("409", "the name is taken"), ("422", "the config has problems (each with its JSON path)"), ("503", "the engine library is missing")]),
            },
        },
        "/api/v2/services/{name}": {
            "get": with_name(op("Describe a service: status, endpoint, token, signature, optimization report", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &svc_errs))),
            "put": with_name({
                let mut o = op("Redeploy a service with a new config", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &deploy_errs));
                o["requestBody"] = body(&config);
                o
            }),
            "delete": with_name(op("Delete a service", "services", mgmt, responses(vec![plain("204", "deleted")], e, &deploy_errs))),
        },
        "/api/v2/services/{name}/scale": {
            "post": with_name({
                let mut o = op("Change the number of instances (reuses the optimized artifact)", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &deploy_errs));
                o["requestBody"] = body(&scale);
                o
            }),
        },
        "/api/v2/services/{name}/stop": { "post": with_name(op("Stop serving", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &deploy_errs))) },
        "/api/v2/services/{name}/start": { "post": with_name(op("Start a stopped service", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &deploy_errs))) },
        "/api/v2/services/{name}/versions": { "get": with_name(op("The service's versions, oldest first (every create and modify makes one)", "services", mgmt, responses(vec![ok("200", "the versions", &versions)], e, &svc_errs))) },
        "/api/v2/services/{name}/rollback": {
            "post": with_name({
                let mut o = op("Serve another version again (default: the one before the current), from its own artifact", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &deploy_errs));
                o["requestBody"] = body(&rollback);
                o
            }),
        },
        "/api/v2/services/{name}/traffic": {
            "get": with_name(op("How requests are split between versions, and how each version has done in the last hour", "services", mgmt, responses(vec![ok("200", "the split", &split)], e, &svc_errs))),
            "put": with_name({
                let mut o = op("Split the traffic between versions (per cent, summing to 100); each version but the current one runs instances of its own and gets requests once they run", "services", mgmt, responses(vec![ok("200", "the split", &split)], e, &deploy_errs));
                o["requestBody"] = body(&split_req);
                o
            }),
        },
        "/api/v2/services/{name}/artifact": { "get": with_name(op("The artifact the service serves, as a tar of its sealed folder (model, artifact.json, report, seal)", "services", mgmt, responses(vec![plain("200", "application/x-tar")], e, &svc_errs))) },
        "/api/v2/services/check": {
            "post": std::convert::identity({
                let mut o = op("Check a config against this server without deploying it: its rules, the processor, resource groups and GPUs, whether the model path can be read here", "services", mgmt, responses(vec![ok("200", "the problems (none: deployable as far as can be told)", &config_check)], e, &[]));
                o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "type": "object" } } } });
                o
            }),
        },
        "/api/v2/services/{name}/metrics": { "get": with_name(op("The last hour on this node, minute by minute: requests, errors, p50/p99 latency, the longest queue", "services", mgmt, responses(vec![ok("200", "60 minutes, oldest first", &minutes)], e, &svc_errs))) },
        "/api/v2/services/{name}/requests": { "get": with_name(op("The request log on this node: sampled predictions (--request-log-rate) and every failed one, newest first, bodies cut to 4 KiB", "services", mgmt, responses(vec![ok("200", "the requests", &samples)], e, &svc_errs))) },
        "/api/v2/services/{name}/promote": {
            "post": with_name({
                let mut o = op("Give one version of the split all the traffic and make it the current version (default: the other version with the largest share)", "services", mgmt, responses(vec![ok("200", "the service", &detail)], e, &deploy_errs));
                o["requestBody"] = body(&promote);
                o
            }),
        },
        "/api/v2/gc": {
            "post": {
                "summary": "Collect what nothing uses now (site admins): uploads no config names, unpacked or downloaded models and artifacts no service, version or placement uses, abandoned temporary folders, log lines past their retention",
                "tags": ["operations"], "security": [{ mgmt: [] }],
                "parameters": [{ "name": "grace", "in": "query", "schema": { "type": "string" }, "description": "keep files younger than this (e.g. 10m; default: the server's --gc-grace)" }],
                "responses": responses(vec![ok("200", "what was collected", &gc_report)], e, &[("400", "a grace that is not a duration"), ("401", "missing or invalid token"), ("403", "not a site admin")]),
            },
        },
        "/api/v2/services/{name}/token": { "post": with_name(op("Rotate the service's prediction token: a new one, shown once in the answer; the old one is refused from then on", "services", mgmt, responses(vec![ok("200", "the new token", &rotated)], e, &svc_errs))) },
        "/api/v2/services/{name}/logs": {
            "get": {
                "summary": "A page of the deploy log",
                "tags": ["logs"], "security": [{ mgmt: [] }],
                "parameters": [
                    name_param(),
                    { "name": "after", "in": "query", "schema": { "type": "integer" }, "description": "return lines after this id" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 5000 } },
                ],
                "responses": responses(vec![ok("200", "log lines", &page)], e, &svc_errs),
            },
        },
        "/api/v2/services/{name}/logs/stream": {
            "get": with_name({
                let mut o = op(
                    "WebSocket: replays the log, then streams new lines until the deploy ends. Each text frame is one LogEvent. Browsers may pass the token as ?token=",
                    "logs", mgmt,
                    responses(vec![("101".into(), json!({ "description": "switching to WebSocket; frames carry LogEvent", "content": { "application/json": { "schema": event } } }))], e, &svc_errs),
                );
                o["parameters"] = json!([name_param(), { "name": "token", "in": "query", "schema": { "type": "string" } }]);
                o
            }),
        },
        "/api/v2/uploads": {
            "post": {
                "summary": "Upload a model file or archive (.tar, .tar.gz, .zip; unpacked safely); answers the model_path to use",
                "tags": ["models"], "security": [{ mgmt: [] }],
                "parameters": [{ "name": "filename", "in": "query", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } } },
                "responses": responses(vec![ok("200", "stored", &upload)], e, &[("400", "bad file name or unsafe archive"), ("401", "missing or invalid token"), ("413", "too large")]),
            },
        },
        "/api/v2/uploads/example": {
            "post": {
                "summary": "File the built-in example model (a small ONNX perceptron and its test data) as an upload; answers its model_path, a service config that deploys it as it is, and a request it answers",
                "tags": ["models"], "security": [{ mgmt: [] }],
                "responses": responses(vec![("200".into(), json!({ "description": "model_path, config and request", "content": { "application/json": { "schema": { "type": "object", "properties": { "model_path": { "type": "string" }, "config": { "$ref": "#/components/schemas/ServiceConfig" }, "request": { "type": "object" } } } } } }))], e, &[("401", "missing or invalid token"), ("403", "the deployer role in no team")]),
            },
        },
        "/api/v2/resource-groups": { "get": op("The server's resource groups (what `resource` may name) and the GPUs discovered at start", "services", mgmt, responses(vec![ok("200", "groups and GPUs", &resource_groups)], e, &[("401", "missing or invalid token")])) },
        "/api/v2/schema": { "get": op("JSON Schema of the service config", "services", "", json!({ "200": { "description": "JSON Schema" } })) },
        "/api/predict/{name}": {
            "post": with_name({
                let mut o = op("Predict (EAS endpoint): the service token in Authorization (raw, or the EAS SDK's signed `EAS <signature>` with Content-MD5 and Date), a KServe v2 JSON inference request or an EAS SDK protobuf request", "predict", svc, responses(vec![ok_or_raw("outputs", &infer_resp, "the matching EAS PredictResponse protobuf, for a protobuf request")], e, &predict_errs));
                o["requestBody"] = eas_body(&infer_req);
                o
            }),
        },
        "/v2": { "get": op("KServe v2 server metadata", "kserve", "", json!({ "200": { "description": "name, version, extensions" } })) },
        "/v2/health/live": { "get": op("Liveness", "kserve", "", json!({ "200": { "description": "live" } })) },
        "/v2/health/ready": { "get": op("Readiness", "kserve", "", json!({ "200": { "description": "ready" } })) },
        "/v2/models/{name}": { "get": with_name(op("Model metadata (-1 for dynamic dimensions)", "kserve", svc, responses(vec![plain("200", "metadata")], e, &svc_errs))) },
        "/v2/models/{name}/ready": { "get": with_name(op("Model readiness: 200 serving, 400 not serving", "kserve", svc, responses(vec![plain("200", "ready"), plain("400", "not serving")], e, &svc_errs))) },
        "/v2/models/{name}/infer": {
            "post": with_name({
                let mut o = op("Inference (KServe v2 JSON, or the binary tensor extension)", "kserve", svc, responses(vec![ok_or_raw("outputs", &infer_resp, "binary tensor extension: the JSON answer (Inference-Header-Content-Length bytes), then the raw outputs that asked for binary_data")], e, &predict_errs));
                o["requestBody"] = kserve_body(&infer_req);
                o
            }),
        },
        "/v2/models/{name}/config": { "get": with_name(op("Model configuration (Triton's model_configuration extension; max_batch_size 0, full shapes)", "kserve", svc, responses(vec![plain("200", "configuration")], e, &svc_errs))) },
        "/v2/models/{name}/versions/{version}/config": { "get": with_version(op("Model configuration, versioned", "kserve", svc, responses(vec![plain("200", "configuration")], e, &svc_errs))) },
        "/v2/models/{name}/versions/{version}": { "get": with_version(op("Model metadata, versioned", "kserve", svc, responses(vec![plain("200", "metadata")], e, &svc_errs))) },
        "/v2/models/{name}/versions/{version}/ready": { "get": with_version(op("Model readiness, versioned", "kserve", svc, responses(vec![plain("200", "ready"), plain("400", "not serving")], e, &svc_errs))) },
        "/v2/models/{name}/versions/{version}/infer": {
            "post": with_version({
                let mut o = op("Inference, versioned", "kserve", svc, responses(vec![ok_or_raw("outputs", &infer_resp, "as the unversioned route")], e, &predict_errs));
                o["requestBody"] = kserve_body(&infer_req);
                o
            }),
        },
        "/metrics": { "get": op("Prometheus metrics (text exposition format)", "operations", "", json!({ "200": { "description": "metrics", "content": { "text/plain": {} } } })) },
        "/healthz": { "get": op("Process health", "operations", "", json!({ "200": { "description": "ok" } })) },
        "/api/openapi.json": { "get": op("This document", "operations", "", json!({ "200": { "description": "OpenAPI 3.1" } })) },
    });

    let mut paths = paths;
    if let (Some(all), Value::Object(more)) = (paths.as_object_mut(), accounts.paths(&error)) {
        all.extend(more);
    }
    readable_or_not(&mut paths, &error);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Whetstone",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Deploy models from EAS service configs, optimized once before serving; EAS and KServe v2 prediction endpoints.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                mgmt: { "type": "http", "scheme": "bearer", "description": "a management API token (the admin token is in DATA/admin-token)" },
                svc: { "type": "apiKey", "in": "header", "name": "Authorization", "description": "the service's prediction token, raw (EAS) or as `Bearer <token>`" },
            },
        },
    })
}

/// Schemas of the users, teams, tokens, share-link and dashboard calls.
struct AccountSchemas {
    me: Value,
    team_roles: Value,
    team: Value,
    create_team: Value,
    set_member: Value,
    team_settings: Value,
    users: Value,
    user: Value,
    create_user: Value,
    tokens: Value,
    create_token: Value,
    new_token: Value,
    share: Value,
    shares: Value,
    shared: Value,
    dashboard: Value,
    page: Value,
}

impl AccountSchemas {
    fn new(g: &mut schemars::SchemaGenerator) -> AccountSchemas {
        use shared::api::*;
        AccountSchemas {
            me: g.subschema_for::<Me>().to_value(),
            team_roles: g.subschema_for::<Vec<TeamRole>>().to_value(),
            team: g.subschema_for::<TeamDetail>().to_value(),
            create_team: g.subschema_for::<CreateTeam>().to_value(),
            set_member: g.subschema_for::<SetMember>().to_value(),
            team_settings: g.subschema_for::<TeamSettings>().to_value(),
            users: g.subschema_for::<Vec<UserInfo>>().to_value(),
            user: g.subschema_for::<UserInfo>().to_value(),
            create_user: g.subschema_for::<CreateUser>().to_value(),
            tokens: g.subschema_for::<Vec<TokenInfo>>().to_value(),
            create_token: g.subschema_for::<CreateToken>().to_value(),
            new_token: g.subschema_for::<NewToken>().to_value(),
            share: g.subschema_for::<ShareLink>().to_value(),
            shares: g.subschema_for::<Vec<ShareLink>>().to_value(),
            shared: g.subschema_for::<SharedService>().to_value(),
            dashboard: g.subschema_for::<TeamDashboard>().to_value(),
            page: g.subschema_for::<LogPage>().to_value(),
        }
    }

    fn paths(&self, e: &Value) -> Value {
        let mgmt = "managementToken";
        let p = |name: &str, what: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": what });
        let with = |mut o: Value, params: Vec<Value>| {
            o["parameters"] = Value::Array(params);
            o
        };
        let with_body = |mut o: Value, schema: &Value| {
            o["requestBody"] = body(schema);
            o
        };
        let auth = [("401", "missing or invalid token")];
        let site = [
            ("401", "missing or invalid token"),
            ("403", "needs a site admin"),
            ("409", "the name is taken"),
            ("422", "bad name"),
        ];
        let team_errs = [
            ("401", "missing or invalid token"),
            ("404", "no such team (or not a member)"),
        ];
        let admin_errs = [
            ("401", "missing or invalid token"),
            ("403", "needs the team's admin role"),
            ("404", "no such team or user"),
            ("409", "the team would have no admin left"),
        ];
        let self_errs = [
            ("401", "missing or invalid token"),
            ("404", "no such user (or not yours)"),
        ];
        let share_errs = [
            ("401", "missing or invalid token"),
            ("403", "needs the deployer role"),
            ("404", "no such service or link"),
        ];
        let gone = [("404", "unknown or revoked link")];
        let (team, user, name, token) = (
            p("team", "team name"),
            p("user", "user name"),
            p("name", "service name"),
            p("token", "share link token"),
        );
        json!({
            "/api/v2/me": { "get": op("The caller: user name, site admin, teams and roles", "accounts", mgmt, responses(vec![ok("200", "the caller", &self.me)], e, &auth)) },
            "/api/v2/teams": {
                "get": op("Teams visible to the caller, with the caller's role", "accounts", mgmt, responses(vec![ok("200", "teams", &self.team_roles)], e, &auth)),
                "post": with_body(op("Create a team (site admins); the creator is its first admin", "accounts", mgmt, responses(vec![ok("201", "the team", &self.team)], e, &site)), &self.create_team),
            },
            "/api/v2/teams/{team}": {
                "get": with(op("A team and its members", "accounts", mgmt, responses(vec![ok("200", "the team", &self.team)], e, &team_errs)), vec![team.clone()]),
                "patch": with(with_body(op("Change a team's settings (team admins): whether viewers see the services' tokens and share links", "accounts", mgmt, responses(vec![ok("200", "the team", &self.team)], e, &admin_errs)), &self.team_settings), vec![team.clone()]),
            },
            "/api/v2/teams/{team}/dashboard": { "get": with(op("A team's services with aggregates: count by status, instances, median speedup, requests and p50 latency in the last hour", "accounts", mgmt, responses(vec![ok("200", "the dashboard", &self.dashboard)], e, &team_errs)), vec![team.clone()]) },
            "/api/v2/teams/{team}/members/{user}": {
                "put": with(with_body(op("Add a member or change their role (team admins)", "accounts", mgmt, responses(vec![ok("200", "the team", &self.team)], e, &admin_errs)), &self.set_member), vec![team.clone(), user.clone()]),
                "delete": with(op("Remove a member (team admins)", "accounts", mgmt, responses(vec![ok("200", "the team", &self.team)], e, &admin_errs)), vec![team.clone(), user.clone()]),
            },
            "/api/v2/users": {
                "get": op("All users (site admins)", "accounts", mgmt, responses(vec![ok("200", "users", &self.users)], e, &site)),
                "post": with_body(op("Create a user (site admins)", "accounts", mgmt, responses(vec![ok("201", "the user", &self.user)], e, &site)), &self.create_user),
            },
            "/api/v2/users/{user}": { "get": with(op("A user (themselves or a site admin)", "accounts", mgmt, responses(vec![ok("200", "the user", &self.user)], e, &self_errs)), vec![user.clone()]) },
            "/api/v2/users/{user}/tokens": {
                "get": with(op("A user's API tokens (never the secret)", "accounts", mgmt, responses(vec![ok("200", "tokens", &self.tokens)], e, &self_errs)), vec![user.clone()]),
                "post": with(with_body(op("Create an API token; the answer is the only time it is shown", "accounts", mgmt, responses(vec![ok("201", "the new token", &self.new_token)], e, &self_errs)), &self.create_token), vec![user.clone()]),
            },
            "/api/v2/users/{user}/tokens/{id}": { "delete": with(op("Revoke an API token", "accounts", mgmt, responses(vec![plain("204", "revoked")], e, &self_errs)), vec![user.clone(), json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } })]) },
            "/api/v2/services/{name}/shares": {
                "get": with(op("The service's live share links", "sharing", mgmt, responses(vec![ok("200", "links", &self.shares)], e, &share_errs)), vec![name.clone()]),
                "post": with(op("Create a read-only share link (/s/{token} in the console)", "sharing", mgmt, responses(vec![ok("201", "the link", &self.share)], e, &share_errs)), vec![name.clone()]),
            },
            "/api/v2/services/{name}/shares/{token}": { "delete": with(op("Revoke a share link; it answers 404 from then on", "sharing", mgmt, responses(vec![plain("204", "revoked")], e, &share_errs)), vec![name.clone(), token.clone()]) },
            "/api/v2/shared/{token}": { "get": with(op("What a share link shows: status, stage, report (no sign-in)", "sharing", "", responses(vec![ok("200", "the shared deployment", &self.shared)], e, &gone)), vec![token.clone()]) },
            "/api/v2/shared/{token}/logs": { "get": with(op("A page of the shared deployment's log (no sign-in)", "sharing", "", responses(vec![ok("200", "log lines", &self.page)], e, &gone)), vec![token.clone()]) },
            "/api/v2/shared/{token}/logs/stream": { "get": with(op("WebSocket: the shared deployment's log, replayed then live (no sign-in)", "sharing", "", responses(vec![plain("101", "switching to WebSocket; frames carry LogEvent")], e, &gone)), vec![token]) },
        })
    }
}

//! `POST /api/predict/{name}`: the service token in `Authorization` (raw, as
//! the EAS SDK sends it, or `Bearer`), a KServe v2 inference request as the
//! body, a KServe v2 response back.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::{Duration, Instant};

use optimizer::tensor::{DType, Tensor, TensorData};
use shared::api::{InferRequest, InferTensor};

use crate::auth::{request_token, tokens_equal};
use crate::error::AppError;
use crate::instances::ServicePool;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/predict/{name}", post(predict))
        // KServe v2 / Open Inference Protocol (JSON).
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    crate::metrics::render(),
                )
            }),
        )
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(|| async { StatusCode::OK }))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .layer(DefaultBodyLimit::max(256 << 20))
}

/// Each service serves exactly one model version.
const MODEL_VERSION: &str = "1";

/// The serving pool of `name` for a caller holding its token.
async fn authorized_pool(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Arc<ServicePool>, AppError> {
    let Some(pool) = state.instances.get(name) else {
        return match state.store.get_service(name).await? {
            Some(s) => Err(AppError::Unavailable(format!(
                "service '{name}' is {} and not serving",
                s.status.as_str()
            ))),
            None => Err(AppError::NotFound(format!("no service named '{name}'"))),
        };
    };
    let ok = request_token(headers, uri).is_some_and(|t| tokens_equal(&t, &pool.token));
    if !ok {
        return Err(AppError::Unauthorized(format!(
            "missing or wrong token for service '{name}': send the service token in the Authorization header"
        )));
    }
    Ok(pool)
}

fn check_version(name: &str, version: &str) -> Result<(), AppError> {
    if version == MODEL_VERSION {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "model '{name}' has no version '{version}'; it serves version {MODEL_VERSION}"
        )))
    }
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({ "name": "whetstone", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }),
    )
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, AppError> {
    let pool = authorized_pool(&state, &name, &headers, &uri).await?;
    let spec = |t: &shared::api::TensorSpec| serde_json::json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape });
    Ok(Json(serde_json::json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": pool.signature.inputs.iter().map(spec).collect::<Vec<_>>(),
        "outputs": pool.signature.outputs.iter().map(spec).collect::<Vec<_>>(),
    })))
}

async fn model_metadata_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, AppError> {
    check_version(&name, &version)?;
    model_metadata(state, Path(name), headers, uri).await
}

/// 200 when the model serves, 400 when it exists but does not (as Triton answers).
async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppError> {
    match authorized_pool(&state, &name, &headers, &uri).await {
        Ok(_) => Ok(Json(serde_json::json!({ "name": name, "ready": true })).into_response()),
        Err(AppError::Unavailable(_)) => Ok((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "name": name, "ready": false })),
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

async fn model_ready_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppError> {
    check_version(&name, &version)?;
    model_ready(state, Path(name), headers, uri).await
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Result<Response, AppError> {
    observed(&name, "kserve", async {
        let pool = authorized_pool(&state, &name, &headers, &uri).await?;
        run(pool, &name, Some(MODEL_VERSION), &body).await
    })
    .await
}

async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Result<Response, AppError> {
    observed(&name, "kserve", async {
        check_version(&name, &version)?;
        let pool = authorized_pool(&state, &name, &headers, &uri).await?;
        run(pool, &name, Some(MODEL_VERSION), &body).await
    })
    .await
}

async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Result<Response, AppError> {
    observed(&name, "eas", async {
        let pool = authorized_pool(&state, &name, &headers, &uri).await?;
        run(pool, &name, None, &body).await
    })
    .await
}

/// Times a prediction and records it, labelled by service and protocol.
/// Requests for unknown services are labelled "-" so junk URLs cannot grow
/// the label set.
async fn observed(
    name: &str,
    protocol: &str,
    f: impl std::future::Future<Output = Result<(Response, Duration), AppError>>,
) -> Result<Response, AppError> {
    let t0 = Instant::now();
    let r = f.await;
    let (code, engine, label) = match &r {
        Ok((resp, engine)) => (resp.status().as_u16(), Some(*engine), name),
        Err(e @ AppError::NotFound(_)) => (e.status().as_u16(), None, "-"),
        Err(e) => (e.status().as_u16(), None, name),
    };
    crate::metrics::observe_request(label, protocol, code, t0.elapsed(), engine);
    if label != "-" {
        crate::recent::record(label, t0.elapsed());
    }
    r.map(|(resp, _)| resp)
}

/// One KServe v2 JSON inference on `pool`.
async fn run(
    pool: Arc<ServicePool>,
    name: &str,
    version: Option<&str>,
    body: &str,
) -> Result<(Response, Duration), AppError> {
    let req: InferRequest = serde_json::from_str(&body).map_err(|e| {
        AppError::BadRequest(format!("body: expected a KServe v2 inference request {{\"inputs\":[{{\"name\",\"shape\",\"datatype\",\"data\"}}]}}: {e}"))
    })?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        inputs.push((t.name.clone(), to_tensor(t)?));
    }
    let wanted: Option<Vec<String>> = req
        .outputs
        .as_ref()
        .map(|o| o.iter().map(|x| x.name.clone()).collect());
    let (outputs, engine) = execute(pool, inputs).await?;
    let outputs: Vec<OutTensor> = outputs
        .iter()
        .filter(|(oname, _)| wanted.as_ref().is_none_or(|w| w.contains(oname)))
        .map(|(oname, t)| OutTensor {
            name: oname,
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            datatype: t.dtype().kserve_name(),
            data: DataRef::of(&t.data),
        })
        .collect();
    let response = Json(OutResponse {
        model_name: name,
        model_version: version,
        id: req.id.as_deref(),
        outputs,
    })
    .into_response();
    Ok((response, engine))
}

/// Runs decoded inputs on the service's engines. Every protocol goes
/// through here, so queueing, batching and instance choice live in one
/// place. Returns the outputs and the time spent in the engine.
pub async fn execute(
    pool: Arc<ServicePool>,
    inputs: Vec<(String, Tensor)>,
) -> Result<(Vec<(String, Tensor)>, Duration), AppError> {
    let engine_start = Instant::now();
    let outputs = tokio::task::spawn_blocking(move || pool.run(&inputs))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| match e {
            optimizer::OptimizerError::BadInput { .. } => AppError::BadRequest(e.to_string()),
            other => AppError::Internal(other.to_string()),
        })?;
    Ok((outputs, engine_start.elapsed()))
}

/// The KServe v2 response, serialized straight from the engine's buffers:
/// f32 values print in their shortest f32 form, with no intermediate
/// `serde_json::Value` (most of a large answer's serving cost).
#[derive(serde::Serialize)]
struct OutResponse<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutTensor<'a>>,
}

#[derive(serde::Serialize)]
struct OutTensor<'a> {
    name: &'a str,
    shape: Vec<i64>,
    datatype: &'static str,
    data: DataRef<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    I8(&'a [i8]),
    U8(&'a [u8]),
    Bool(&'a [bool]),
}

impl<'a> DataRef<'a> {
    fn of(d: &'a TensorData) -> DataRef<'a> {
        match d {
            TensorData::F32(v) => DataRef::F32(v),
            TensorData::F64(v) => DataRef::F64(v),
            TensorData::I64(v) => DataRef::I64(v),
            TensorData::I32(v) => DataRef::I32(v),
            TensorData::I8(v) => DataRef::I8(v),
            TensorData::U8(v) => DataRef::U8(v),
            TensorData::Bool(v) => DataRef::Bool(v),
        }
    }
}

fn flatten(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
        other => out.push(other.clone()),
    }
}

/// A KServe v2 JSON tensor as an engine tensor; errors name the input.
pub fn to_tensor(t: &InferTensor) -> Result<Tensor, AppError> {
    let bad = |reason: String| AppError::BadRequest(format!("input '{}': {reason}", t.name));
    let dtype = DType::from_kserve_name(&t.datatype)
        .ok_or_else(|| bad(format!("unsupported datatype '{}'; expected one of FP32, FP64, INT64, INT32, INT8, UINT8, BOOL", t.datatype)))?;
    if t.shape.iter().any(|&d| d < 0) {
        return Err(bad(format!("shape {:?} has a negative dimension", t.shape)));
    }
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let mut flat = Vec::new();
    flatten(&t.data, &mut flat);
    let n: usize = shape.iter().product();
    if flat.len() != n {
        return Err(bad(format!(
            "shape {:?} needs {n} values, data has {}",
            t.shape,
            flat.len()
        )));
    }
    let num = |i: usize, v: &serde_json::Value| {
        v.as_f64()
            .ok_or_else(|| bad(format!("data[{i}] is not a number")))
    };
    let int = |i: usize, v: &serde_json::Value| {
        v.as_i64()
            .ok_or_else(|| bad(format!("data[{i}] is not an integer")))
    };
    let data = match dtype {
        DType::F32 => TensorData::F32(
            flat.iter()
                .enumerate()
                .map(|(i, v)| num(i, v).map(|x| x as f32))
                .collect::<Result<_, _>>()?,
        ),
        DType::F64 => TensorData::F64(
            flat.iter()
                .enumerate()
                .map(|(i, v)| num(i, v))
                .collect::<Result<_, _>>()?,
        ),
        DType::I64 => TensorData::I64(
            flat.iter()
                .enumerate()
                .map(|(i, v)| int(i, v))
                .collect::<Result<_, _>>()?,
        ),
        DType::I32 => TensorData::I32(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    int(i, v).and_then(|x| {
                        i32::try_from(x).map_err(|_| bad(format!("data[{i}] out of INT32 range")))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::I8 => TensorData::I8(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    int(i, v).and_then(|x| {
                        i8::try_from(x).map_err(|_| bad(format!("data[{i}] out of INT8 range")))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::U8 => TensorData::U8(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    int(i, v).and_then(|x| {
                        u8::try_from(x).map_err(|_| bad(format!("data[{i}] out of UINT8 range")))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::Bool => TensorData::Bool(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_bool()
                        .ok_or_else(|| bad(format!("data[{i}] is not a boolean")))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Tensor::new(shape, data).map_err(bad)
}

pub fn from_tensor(name: String, t: &Tensor) -> InferTensor {
    let data = match &t.data {
        TensorData::F32(v) => serde_json::json!(v),
        TensorData::F64(v) => serde_json::json!(v),
        TensorData::I64(v) => serde_json::json!(v),
        TensorData::I32(v) => serde_json::json!(v),
        TensorData::I8(v) => serde_json::json!(v),
        TensorData::U8(v) => serde_json::json!(v),
        TensorData::Bool(v) => serde_json::json!(v),
    };
    InferTensor {
        name,
        shape: t.shape.iter().map(|&d| d as i64).collect(),
        datatype: t.dtype().kserve_name().to_string(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(datatype: &str, shape: Vec<i64>, data: serde_json::Value) -> InferTensor {
        InferTensor {
            name: "x".into(),
            shape,
            datatype: datatype.into(),
            data,
        }
    }

    #[test]
    fn nested_and_flat_data_both_parse() {
        let a = to_tensor(&req(
            "FP32",
            vec![2, 2],
            serde_json::json!([[1, 2], [3, 4.5]]),
        ))
        .unwrap();
        let b = to_tensor(&req("FP32", vec![2, 2], serde_json::json!([1, 2, 3, 4.5]))).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
    }

    #[test]
    fn wrong_count_and_wrong_type_are_named() {
        let e = to_tensor(&req("INT64", vec![1, 3], serde_json::json!([1, 2])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input 'x'") && e.contains("needs 3 values"),
            "{e}"
        );
        let e = to_tensor(&req("INT64", vec![2], serde_json::json!([1, 2.5])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data[1] is not an integer"), "{e}");
        let e = to_tensor(&req("FP17", vec![1], serde_json::json!([1])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported datatype 'FP17'"), "{e}");
    }
}

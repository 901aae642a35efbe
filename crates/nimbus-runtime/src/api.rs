//! The Lambda Runtime API, served to one environment on its own loopback
//! port: only that environment is told the address, so one function's
//! runtime never sees another's events.
//!
//! It is written on hyper directly rather than axum: four routes, and the
//! long-poll of `invocation/next` is the hot path of every warm invoke.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nimbus_core::limits::SYNC_PAYLOAD_MAX;
use tokio::net::TcpListener;

use crate::env::{InitError, Reply, Shared};

const PREFIX: &str = "/2018-06-01/runtime/";

/// Binds a listener on an ephemeral loopback port and serves the Runtime API
/// for `shared` on it until the environment is dropped (plain-process mode).
pub(crate) async fn serve(shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    serve_on(listener, shared);
    Ok(addr)
}

/// Serves the Runtime API for `shared` on `listener` (in jailed mode, one
/// bound inside the sandbox's network namespace) until the environment is
/// dropped.
pub(crate) fn serve_on(listener: TcpListener, shared: Arc<Shared>) {
    let weak = Arc::downgrade(&shared);
    drop(shared);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
            let Some(shared) = weak.upgrade() else { return };
            let Ok(Ok((stream, _))) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(shared.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    r
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Resp {
    json(
        status,
        serde_json::json!({"errorMessage": message, "errorType": error_type}).to_string(),
    )
}

fn accepted() -> Resp {
    json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            "Unknown Runtime API path",
        ));
    };
    let resp = match (req.method(), rest.split('/').collect::<Vec<_>>().as_slice()) {
        (&Method::GET, ["invocation", "next"]) => next(&shared).await,
        (&Method::POST, ["invocation", id, "response"]) => {
            let id = id.to_string();
            match read_body(req).await {
                Ok(body) => complete(&shared, &id, Reply::Response(body)),
                Err(()) => {
                    complete(&shared, &id, Reply::ResponseTooLarge);
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        &format!(
                            "Exceeded maximum allowed payload size ({SYNC_PAYLOAD_MAX} bytes)."
                        ),
                    )
                }
            }
        }
        (&Method::POST, ["invocation", id, "error"]) => {
            let id = id.to_string();
            let error_type = error_type(&req);
            let body = read_body(req).await.unwrap_or_default();
            complete(&shared, &id, Reply::Error { error_type, body })
        }
        (&Method::POST, ["init", "error"]) => {
            let error_type = error_type(&req);
            let body = read_body(req).await.unwrap_or_default();
            let mut slot = shared.init_error.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(InitError { error_type, body });
            drop(slot);
            // Lambda ends an environment whose init failed.
            shared.kill.notify_one();
            accepted()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            "Unknown Runtime API path",
        ),
    };
    Ok(resp)
}

fn error_type(req: &Request<Incoming>) -> String {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Runtime.Unknown")
        .to_string()
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ()> {
    match Limited::new(req.into_body(), SYNC_PAYLOAD_MAX)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(()),
    }
}

async fn next(shared: &Shared) -> Resp {
    let _ = shared.ready_at.set(Instant::now());
    let mut inbox = shared.inbox.lock().await;
    let Some(d) = inbox.recv().await else {
        return error(
            StatusCode::GONE,
            "EnvironmentShutdown",
            "The execution environment is shutting down",
        );
    };
    drop(inbox);
    let now = Instant::now();
    let deadline_ms = chrono::Utc::now().timestamp_millis() as u64 + d.timeout_ms;
    *shared.current.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((d.request_id.clone(), d.reply));
    // The runtime wrote everything it printed so far before this request,
    // so the pipe holds it now.
    let before = shared
        .capture
        .get()
        .map(crate::logs::Capture::take)
        .unwrap_or_default();
    let _ = d.delivered.send((now, before));
    let mut r = json(StatusCode::OK, d.payload);
    let h = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", &d.request_id);
    set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &d.function_arn);
    set("lambda-runtime-trace-id", &d.trace_id);
    if let Some(cc) = &d.client_context {
        set("lambda-runtime-client-context", cc);
    }
    if let Some(ci) = &d.cognito_identity {
        set("lambda-runtime-cognito-identity", ci);
    }
    r
}

fn complete(shared: &Shared, id: &str, reply: Reply) -> Resp {
    let mut current = shared.current.lock().unwrap_or_else(|e| e.into_inner());
    match current.take() {
        Some((cur, tx)) if cur == id => {
            drop(current);
            let _ = tx.send(reply);
            accepted()
        }
        other => {
            *current = other;
            error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "Invalid request ID",
            )
        }
    }
}

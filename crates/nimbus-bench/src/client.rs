//! A minimal HTTP/1.1 client on hyper's connection API: one TCP connection,
//! kept alive, requests sent one after another. Used both by the load
//! generator (one `Conn` per simulated client) and for the control-plane
//! calls (create a function, change its configuration, a cold invoke).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The root credentials the benchmark starts nimbus with, and signs every
/// request with (SigV4, as any AWS client does).
pub(crate) const ACCESS_KEY_ID: &str = "AKIDNIMBUSBENCH";
pub(crate) const SECRET_ACCESS_KEY: &str = "nimbus-bench-secret";

/// No single request of the benchmark may take longer than this.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    /// The body as text, for error messages.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A 200 that is not a function error (`X-Amz-Function-Error`).
    pub(crate) fn is_success(&self) -> bool {
        self.status == StatusCode::OK && !self.headers.contains_key("x-amz-function-error")
    }
}

/// One kept-alive HTTP/1.1 connection to a loopback server.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects to `addr`, which must be a loopback address: the benchmark
    /// never sends traffic anywhere else.
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self> {
        ensure!(
            addr.ip().is_loopback(),
            "refusing to benchmark {addr}: only loopback addresses are allowed"
        );
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole response.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        extra_headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<Resp> {
        let service = if path.starts_with("/2015-03-31/") {
            "lambda"
        } else {
            "execute-api"
        };
        self.send_as(
            method,
            path,
            extra_headers,
            body,
            "application/json",
            service,
        )
        .await
    }

    /// An IAM query-protocol action (`Action=...&...`, already encoded).
    pub(crate) async fn iam_action(&mut self, form: &str) -> Result<Resp> {
        let body = Bytes::from(format!("{form}&Version=2010-05-08"));
        self.send_as(
            Method::POST,
            "/",
            &[],
            body,
            "application/x-www-form-urlencoded",
            "iam",
        )
        .await
    }

    /// An S3 request (path-style, `x-amz-content-sha256: UNSIGNED-PAYLOAD`,
    /// as presigned URLs and the SDKs over TLS send bodies).
    pub(crate) async fn s3(&mut self, method: Method, path: &str, body: Bytes) -> Result<Resp> {
        self.send_as(
            method,
            path,
            &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
            body,
            "application/octet-stream",
            "s3",
        )
        .await
    }

    /// A CloudWatch Logs JSON 1.1 operation (`Logs_20140328.<op>`).
    pub(crate) async fn logs_action(&mut self, op: &str, body: serde_json::Value) -> Result<Resp> {
        let target = format!("Logs_20140328.{op}");
        self.send_as(
            Method::POST,
            "/",
            &[("x-amz-target", &target)],
            body.to_string().into(),
            "application/x-amz-json-1.1",
            "logs",
        )
        .await
    }

    /// Sends one request signed for `service` and reads the whole response.
    async fn send_as(
        &mut self,
        method: Method,
        path: &str,
        extra_headers: &[(&'static str, &str)],
        body: Bytes,
        content_type: &str,
        service: &str,
    ) -> Result<Resp> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, content_type);
        for (k, v) in extra_headers {
            req = req.header(*k, *v);
        }
        // Every request is signed, the echo floor's too, so the client does
        // the same work for both.
        let unsigned = service == "s3";
        let hash = if unsigned {
            "UNSIGNED-PAYLOAD".to_string()
        } else {
            nimbus_auth::payload_sha256(&body)
        };
        let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut to_sign = vec![("host", self.host.as_str()), ("content-type", content_type)];
        if unsigned {
            to_sign.push(("x-amz-content-sha256", "UNSIGNED-PAYLOAD"));
        }
        let parts = nimbus_auth::RequestParts {
            method: method.as_str(),
            path: raw_path,
            query,
            headers: &to_sign,
            payload_hash: &hash,
        };
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        for (k, v) in nimbus_auth::sign_request(
            &parts,
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            "us-east-1",
            service,
            &amz_date,
        ) {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body))?;
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => Ok(r?),
            Err(_) => bail!("no response within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// `send`, failing unless the status is `expect`.
    pub(crate) async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        expect: StatusCode,
    ) -> Result<Resp> {
        let resp = self.send(method.clone(), path, &[], body).await?;
        if resp.status != expect {
            bail!(
                "{method} {path}: expected {expect}, got {}: {}",
                resp.status,
                resp.text()
            );
        }
        Ok(resp)
    }
}

//! The throughput and latency floor: a plain hyper 1.x HTTP/1.1 server that
//! answers every request with its own body. It runs as a separate process
//! (`nimbus-bench echo-server`, hidden) so it competes for the same CPUs in
//! the same way nimbus does, on a default multi-threaded tokio runtime as
//! `nimbus serve` uses.

use std::convert::Infallible;

use anyhow::Result;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Line the server prints on stdout once it accepts connections.
pub(crate) const READY: &str = "echo ready on ";

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Serves on an ephemeral loopback port until stdin closes (the harness
/// exited or dropped the pipe) or the process is signalled.
pub(crate) fn serve() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        println!("{READY}http://{}", listener.local_addr()?);
        // Exit with the parent: it holds our stdin.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    })
}

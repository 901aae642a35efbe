//! `nimbus-bench s3`: PutObject and GetObject throughput of the object
//! store for small (4 KiB) and large (64 MiB) objects, through a raw
//! SigV4-signed HTTP/1.1 client on loopback, beside floors measured in the
//! same run: the same bytes written to a file the way the store writes a
//! body (temporary file, fsync, rename) and read back, and for small
//! objects the same requests to the hyper echo server (4 KiB each way).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::client::Conn;
use crate::procs::{Server, TempServer, emit, nimbus_binary};
use crate::report::host;
use crate::stats::Samples;

const SMALL: usize = 4 * 1024;
const LARGE: usize = 64 * 1024 * 1024;
const BUCKET: &str = "bench";

/// Options of `nimbus-bench s3`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct S3Args {
    /// 4 KiB objects put (then got) by each client.
    #[arg(long, default_value_t = 500)]
    small: usize,
    /// Clients at once for the concurrent 4 KiB round (one connection each).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// 64 MiB objects put (then got).
    #[arg(long, default_value_t = 5)]
    large: usize,
    /// The nimbus binary [default: `nimbus` next to this executable].
    #[arg(long, value_name = "PATH")]
    nimbus: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[nimbus-bench s3] {msg}");
}

pub(crate) fn run(a: S3Args) -> Result<()> {
    ensure!(
        a.small > 0 && a.clients > 0 && a.large > 0,
        "--small, --clients and --large must be positive"
    );
    let nimbus = nimbus_binary(a.nimbus.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(bench(&a, &nimbus))?;
    emit(&text, a.out.as_deref())
}

/// One measured series: per-operation latencies and the wall time.
struct Series {
    lat_ns: Vec<u64>,
    wall: Duration,
    bytes_each: usize,
}

impl Series {
    fn ops_per_sec(&self) -> f64 {
        self.lat_ns.len() as f64 / self.wall.as_secs_f64()
    }

    fn mib_per_sec(&self) -> f64 {
        (self.lat_ns.len() * self.bytes_each) as f64 / (1024.0 * 1024.0) / self.wall.as_secs_f64()
    }

    fn ms(&self, p: f64) -> f64 {
        Samples::from_nanos(&self.lat_ns).pct(p).unwrap_or(0.0)
    }
}

fn payload(len: usize, seed: u64) -> Bytes {
    // Not compressible, not constant: a simple xorshift stream.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

async fn put_get(
    conn: &mut Conn,
    method: Method,
    keys: &[String],
    body: &Bytes,
) -> Result<Vec<u64>> {
    let mut lat = Vec::with_capacity(keys.len());
    for key in keys {
        let path = format!("/{BUCKET}/{key}");
        let send = if method == Method::PUT {
            body.clone()
        } else {
            Bytes::new()
        };
        let t = Instant::now();
        let resp = conn.s3(method.clone(), &path, send).await?;
        lat.push(t.elapsed().as_nanos() as u64);
        ensure!(
            resp.status == StatusCode::OK,
            "{method} {path}: {} {}",
            resp.status,
            resp.text()
        );
        if method == Method::GET {
            ensure!(resp.body.len() == body.len(), "{path}: short body");
        }
    }
    Ok(lat)
}

async fn nimbus_series(
    addr: std::net::SocketAddr,
    method: Method,
    clients: usize,
    per_client: usize,
    prefix: &str,
    body: &Bytes,
) -> Result<Series> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::connect(addr).await?);
    }
    let began = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let keys: Vec<String> = (0..per_client)
            .map(|i| format!("{prefix}/{c}/{i}"))
            .collect();
        let (method, body) = (method.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            put_get(&mut conn, method, &keys, &body).await
        }));
    }
    let mut lat_ns = Vec::new();
    for t in tasks {
        lat_ns.extend(t.await??);
    }
    Ok(Series {
        lat_ns,
        wall: began.elapsed(),
        bytes_each: body.len(),
    })
}

/// The floor: what the store does to the disk for a PUT (write a
/// temporary file, fsync it, rename it into place, fsync the directory)
/// and for a GET (read the file), without HTTP, SigV4, SQLite or hashing.
fn floor(dir: &Path, n: usize, body: &Bytes) -> Result<(Series, Series)> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::create_dir_all(dir.join("objects"))?;
    let objects = std::fs::File::open(dir.join("objects"))?;
    let mut put = Vec::with_capacity(n);
    let began = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let tmp = dir.join("tmp").join(i.to_string());
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join("objects").join(i.to_string()))?;
        objects.sync_all()?;
        put.push(t.elapsed().as_nanos() as u64);
    }
    let put_wall = began.elapsed();
    let mut get = Vec::with_capacity(n);
    let began = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let data = std::fs::read(dir.join("objects").join(i.to_string()))?;
        ensure!(data.len() == body.len(), "short read");
        get.push(t.elapsed().as_nanos() as u64);
    }
    let get_wall = began.elapsed();
    Ok((
        Series {
            lat_ns: put,
            wall: put_wall,
            bytes_each: body.len(),
        },
        Series {
            lat_ns: get,
            wall: get_wall,
            bytes_each: body.len(),
        },
    ))
}

async fn bench(a: &S3Args, nimbus_bin: &Path) -> Result<String> {
    let server = TempServer::start(nimbus_bin, "nimbus-bench-s3-", &[])?;
    let mut echo_cmd = Command::new(std::env::current_exe()?);
    echo_cmd.arg("echo-server");
    let mut echo = Server::spawn(echo_cmd, crate::echo::READY, Duration::from_secs(10))?;
    let result = measure(a, &server.server, echo.addr()?, server.dir()).await;
    echo.stop(Duration::from_secs(2));
    server.finish(result)
}

async fn measure(
    a: &S3Args,
    server: &Server,
    echo: std::net::SocketAddr,
    dir: &Path,
) -> Result<String> {
    let addr = server.addr()?;
    let mut conn = Conn::connect(addr).await?;
    let made = conn
        .s3(Method::PUT, &format!("/{BUCKET}"), Bytes::new())
        .await?;
    ensure!(
        made.status == StatusCode::OK,
        "CreateBucket: {}",
        made.text()
    );
    let small = payload(SMALL, 1);
    let large = payload(LARGE, 2);

    progress(format!("4 KiB: {} PUTs and GETs, one client", a.small));
    let s_put1 = nimbus_series(addr, Method::PUT, 1, a.small, "s1", &small).await?;
    let s_get1 = nimbus_series(addr, Method::GET, 1, a.small, "s1", &small).await?;
    progress(format!(
        "4 KiB: {} clients x {} PUTs and GETs",
        a.clients, a.small
    ));
    let s_putn = nimbus_series(addr, Method::PUT, a.clients, a.small, "sn", &small).await?;
    let s_getn = nimbus_series(addr, Method::GET, a.clients, a.small, "sn", &small).await?;
    progress("4 KiB: the same requests to the hyper echo server");
    let e1 = nimbus_series(echo, Method::PUT, 1, a.small, "e1", &small).await?;
    let en = nimbus_series(echo, Method::PUT, a.clients, a.small, "en", &small).await?;
    progress(format!("64 MiB: {} PUTs and GETs", a.large));
    let l_put = nimbus_series(addr, Method::PUT, 1, a.large, "l", &large).await?;
    let l_get = nimbus_series(addr, Method::GET, 1, a.large, "l", &large).await?;
    progress("floors: the same bytes to files (temp, fsync, rename) and back");
    let (f_small_put, f_small_get) = floor(&dir.join("floor-small"), a.small, &small)?;
    let (f_large_put, f_large_get) = floor(&dir.join("floor-large"), a.large, &large)?;

    let mut t = String::new();
    t.push_str(&format!(
        "## S3 object store (`nimbus-bench s3`)\n\nHost: {}\n\n",
        host()
    ));
    t.push_str(
        "| operation | nimbus | HTTP floor (hyper echo, 4 KiB each way) | file floor (temp+fsync+rename / read) |\n",
    );
    t.push_str("|---|---|---|---|\n");
    let small_row = |name: &str, n: &Series, e: &Series, f: &Series| {
        format!(
            "| {name} | {:.0} ops/s (p50 {:.2} ms, p99 {:.2} ms) | {:.0} ops/s (p50 {:.2} ms): {:.2}x | {:.0} ops/s (p50 {:.2} ms): {:.2}x |\n",
            n.ops_per_sec(),
            n.ms(50.0),
            n.ms(99.0),
            e.ops_per_sec(),
            e.ms(50.0),
            n.ops_per_sec() / e.ops_per_sec(),
            f.ops_per_sec(),
            f.ms(50.0),
            n.ops_per_sec() / f.ops_per_sec(),
        )
    };
    let large_row = |name: &str, n: &Series, f: &Series| {
        format!(
            "| {name} | {:.0} MiB/s (p50 {:.0} ms) | | {:.0} MiB/s (p50 {:.0} ms): {:.2}x |\n",
            n.mib_per_sec(),
            n.ms(50.0),
            f.mib_per_sec(),
            f.ms(50.0),
            n.mib_per_sec() / f.mib_per_sec()
        )
    };
    t.push_str(&small_row(
        "PutObject 4 KiB, 1 client",
        &s_put1,
        &e1,
        &f_small_put,
    ));
    t.push_str(&small_row(
        "GetObject 4 KiB, 1 client",
        &s_get1,
        &e1,
        &f_small_get,
    ));
    let n = a.clients;
    t.push_str(&small_row(
        &format!("PutObject 4 KiB, {n} clients"),
        &s_putn,
        &en,
        &f_small_put,
    ));
    t.push_str(&small_row(
        &format!("GetObject 4 KiB, {n} clients"),
        &s_getn,
        &en,
        &f_small_get,
    ));
    t.push_str(&large_row("PutObject 64 MiB", &l_put, &f_large_put));
    t.push_str(&large_row("GetObject 64 MiB", &l_get, &f_large_get));
    t.push_str(&format!(
        "\n{} x 4 KiB per client, {} x 64 MiB; the file floor runs on one thread; ratios are nimbus / floor.\n",
        a.small, a.large
    ));
    Ok(t)
}

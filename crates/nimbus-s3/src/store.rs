//! Where buckets and objects live: object bodies are files under
//! `<dir>/objects/`, everything else (buckets, keys, ETags, metadata,
//! multipart uploads, notification configurations and the notification
//! outbox) is in one SQLite database, `<dir>/s3.db`.
//!
//! The crash invariant: a body is written to `<dir>/tmp/`, fsynced and
//! renamed into `objects/` (whose directory is fsynced too) *before* the
//! transaction that makes a key point at it commits, and a replaced or
//! deleted body is unlinked only *after* its transaction committed. So
//! every row names a complete, durable file; what a crash can leave behind
//! is only files no row names, which [`ObjectStore::open`] sweeps.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serde::{Deserialize, Serialize};

use crate::notify::{self, EventInfo, Pending, Target};

/// The headers an object keeps from its upload and returns on GET/HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attrs {
    pub(crate) content_type: Option<String>,
    pub(crate) content_encoding: Option<String>,
    pub(crate) content_disposition: Option<String>,
    pub(crate) content_language: Option<String>,
    pub(crate) cache_control: Option<String>,
    /// `x-amz-meta-*`, names without the prefix, lower case.
    pub(crate) metadata: BTreeMap<String, String>,
}

/// One stored object.
#[derive(Debug, Clone)]
pub(crate) struct ObjectMeta {
    pub(crate) key: String,
    /// The body's file name under `objects/`.
    pub(crate) file: String,
    pub(crate) size: u64,
    /// Without quotes: MD5 hex, or `<md5 of part md5s>-<parts>`.
    pub(crate) etag: String,
    pub(crate) last_modified_ms: i64,
    pub(crate) attrs: Attrs,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone)]
pub(crate) struct PartMeta {
    pub(crate) number: i32,
    pub(crate) file: String,
    pub(crate) size: u64,
    pub(crate) etag: String,
    pub(crate) last_modified_ms: i64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) attrs: Attrs,
}

/// The object store on disk.
pub struct ObjectStore {
    dir: PathBuf,
    db: Mutex<Connection>,
    /// Source of S3 event `sequencer`s: increasing across all keys.
    sequencer: AtomicU64,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    notification TEXT
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    attrs TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attrs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function_arn TEXT NOT NULL,
    bucket TEXT NOT NULL,
    payload TEXT NOT NULL,
    trace_header TEXT
);
";

/// An internal failure: logged, answered as `InternalError`.
pub(crate) fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!("object store: {e}");
    S3Error::new(S3ErrorCode::InternalError)
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl ObjectStore {
    /// Opens (creating) the store under `dir`, removes what an interrupted
    /// write left behind (temporary files, bodies no row names).
    pub fn open(dir: &Path) -> std::io::Result<ObjectStore> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::create_dir_all(dir.join("objects"))?;
        let conn = Connection::open(dir.join("s3.db")).map_err(std::io::Error::other)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(std::io::Error::other)?;
        let store = ObjectStore {
            dir: dir.to_path_buf(),
            db: Mutex::new(conn),
            sequencer: AtomicU64::new(
                u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0),
            ),
        };
        store.sweep()?;
        Ok(store)
    }

    fn sweep(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(self.dir.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        let referenced: HashSet<String> = {
            let db = self.conn();
            let mut stmt = db
                .prepare("SELECT file FROM objects UNION ALL SELECT file FROM parts")
                .map_err(std::io::Error::other)?;
            stmt.query_map([], |r| r.get::<_, String>(0))
                .map_err(std::io::Error::other)?
                .collect::<Result<_, _>>()
                .map_err(std::io::Error::other)?
        };
        for shard in std::fs::read_dir(self.dir.join("objects"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    tracing::info!(file = %name, "removing an unreferenced object body");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh temporary path for a body being written.
    pub(crate) fn temp_path(&self) -> PathBuf {
        self.dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Where the body named `file` lives.
    pub(crate) fn body_path(&self, file: &str) -> PathBuf {
        self.dir.join("objects").join(&file[..2]).join(file)
    }

    /// Moves a complete, fsynced temporary file into `objects/` under a new
    /// name, durably; returns the name.
    pub(crate) fn install(&self, temp: &Path) -> std::io::Result<String> {
        let file = uuid::Uuid::new_v4().simple().to_string();
        let dest = self.body_path(&file);
        let shard = dest.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(shard)?;
        std::fs::rename(temp, &dest)?;
        fsync_dir(shard)?;
        Ok(file)
    }

    /// Unlinks bodies no committed row names any more.
    pub(crate) fn remove_bodies(&self, files: &[String]) {
        for f in files {
            if let Err(e) = std::fs::remove_file(self.body_path(f)) {
                tracing::warn!(file = %f, "cannot remove an object body: {e}");
            }
        }
    }

    pub(crate) fn next_sequencer(&self) -> u64 {
        self.sequencer.fetch_add(1, Ordering::Relaxed)
    }

    // ---- buckets ----

    pub(crate) fn create_bucket(&self, name: &str) -> S3Result<()> {
        let db = self.conn();
        let n = db
            .execute(
                "INSERT OR IGNORE INTO buckets (name, created_ms) VALUES (?1, ?2)",
                params![name, now_ms()],
            )
            .map_err(internal)?;
        if n == 0 {
            return Err(S3Error::with_message(
                S3ErrorCode::BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it.",
            ));
        }
        Ok(())
    }

    pub(crate) fn list_buckets(&self) -> S3Result<Vec<(String, i64)>> {
        let db = self.conn();
        let mut stmt = db
            .prepare("SELECT name, created_ms FROM buckets ORDER BY name")
            .map_err(internal)?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(internal)?
            .collect::<Result<_, _>>()
            .map_err(internal)
    }

    pub(crate) fn bucket_exists(&self, name: &str) -> S3Result<bool> {
        let db = self.conn();
        bucket_exists(&db, name)
    }

    /// Deletes an empty bucket with its unfinished uploads; returns the
    /// part bodies to unlink.
    pub(crate) fn delete_bucket(&self, name: &str) -> S3Result<Vec<String>> {
        let mut db = self.conn();
        let tx = db.transaction().map_err(internal)?;
        if !bucket_exists(&tx, name)? {
            return Err(no_such_bucket());
        }
        let used: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket = ?1)",
                [name],
                |r| r.get(0),
            )
            .map_err(internal)?;
        if used {
            return Err(S3Error::with_message(
                S3ErrorCode::BucketNotEmpty,
                "The bucket you tried to delete is not empty",
            ));
        }
        let files: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT p.file FROM parts p JOIN uploads u ON u.id = p.upload_id
                     WHERE u.bucket = ?1",
                )
                .map_err(internal)?;
            stmt.query_map([name], |r| r.get(0))
                .map_err(internal)?
                .collect::<Result<_, _>>()
                .map_err(internal)?
        };
        tx.execute(
            "DELETE FROM parts WHERE upload_id IN (SELECT id FROM uploads WHERE bucket = ?1)",
            [name],
        )
        .map_err(internal)?;
        tx.execute("DELETE FROM uploads WHERE bucket = ?1", [name])
            .map_err(internal)?;
        tx.execute("DELETE FROM buckets WHERE name = ?1", [name])
            .map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(files)
    }

    pub(crate) fn notification(&self, bucket: &str) -> S3Result<Vec<Target>> {
        let db = self.conn();
        notification_of(&db, bucket)?.ok_or_else(no_such_bucket)
    }

    pub(crate) fn set_notification(&self, bucket: &str, targets: &[Target]) -> S3Result<()> {
        let json = serde_json::to_string(targets).map_err(internal)?;
        let db = self.conn();
        let n = db
            .execute(
                "UPDATE buckets SET notification = ?2 WHERE name = ?1",
                params![bucket, json],
            )
            .map_err(internal)?;
        if n == 0 {
            return Err(no_such_bucket());
        }
        Ok(())
    }

    /// Every bucket notification that targets `function_arn` (or a version
    /// or alias of it, when `function_arn` is unqualified).
    pub fn notifications_for_function(
        &self,
        function_arn: &str,
    ) -> std::io::Result<Vec<(String, Target)>> {
        let db = self.conn();
        let mut stmt = db
            .prepare(
                "SELECT name, notification FROM buckets WHERE notification IS NOT NULL ORDER BY name",
            )
            .map_err(std::io::Error::other)?;
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(std::io::Error::other)?
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?;
        let qualified_prefix = format!("{function_arn}:");
        let mut out = Vec::new();
        for (bucket, json) in rows {
            let targets: Vec<Target> = serde_json::from_str(&json).unwrap_or_default();
            for t in targets {
                if t.function_arn == function_arn || t.function_arn.starts_with(&qualified_prefix) {
                    out.push((bucket.clone(), t));
                }
            }
        }
        Ok(out)
    }

    // ---- objects ----

    pub(crate) fn get_object(&self, bucket: &str, key: &str) -> S3Result<Option<ObjectMeta>> {
        let db = self.conn();
        db.query_row(
            "SELECT key, file, size, etag, last_modified_ms, attrs FROM objects
             WHERE bucket = ?1 AND key = ?2",
            params![bucket, key],
            row_to_object,
        )
        .optional()
        .map_err(internal)
    }

    /// Like [`Self::get_object`], but `NoSuchBucket` / `NoSuchKey` when absent.
    pub(crate) fn require_object(&self, bucket: &str, key: &str) -> S3Result<ObjectMeta> {
        match self.get_object(bucket, key)? {
            Some(o) => Ok(o),
            None if !self.bucket_exists(bucket)? => Err(no_such_bucket()),
            None => Err(S3Error::with_message(
                S3ErrorCode::NoSuchKey,
                "The specified key does not exist.",
            )),
        }
    }

    /// Objects of `bucket` whose key starts with `prefix` and sorts after
    /// `after`, in key order, at most `limit`.
    pub(crate) fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> S3Result<Vec<ObjectMeta>> {
        let db = self.conn();
        let mut stmt = db
            .prepare_cached(
                "SELECT key, file, size, etag, last_modified_ms, attrs FROM objects
                 WHERE bucket = ?1 AND key > ?2 AND key >= ?3 ORDER BY key LIMIT ?4",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map(
                params![
                    bucket,
                    after,
                    prefix,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                row_to_object,
            )
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in rows {
            let row = row.map_err(internal)?;
            if !row.key.starts_with(prefix) {
                break;
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Makes `meta` the object at `bucket`/`key` and queues the
    /// notifications it triggers, in one transaction. Returns the body it
    /// replaced (to unlink now) and the queued notifications.
    pub(crate) fn commit_object(
        &self,
        bucket: &str,
        meta: &ObjectMeta,
        event: &EventInfo,
        finish_upload: Option<&str>,
    ) -> S3Result<(Vec<String>, Vec<Pending>)> {
        let mut db = self.conn();
        let tx = db.transaction().map_err(internal)?;
        let Some(targets) = notification_of(&tx, bucket)? else {
            return Err(no_such_bucket());
        };
        let mut unlink: Vec<String> = tx
            .query_row(
                "SELECT file FROM objects WHERE bucket = ?1 AND key = ?2",
                params![bucket, meta.key],
                |r| r.get(0),
            )
            .optional()
            .map_err(internal)?
            .into_iter()
            .collect();
        let attrs = serde_json::to_string(&meta.attrs).map_err(internal)?;
        tx.execute(
            "INSERT OR REPLACE INTO objects (bucket, key, file, size, etag, last_modified_ms, attrs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                bucket,
                meta.key,
                meta.file,
                i64::try_from(meta.size).map_err(internal)?,
                meta.etag,
                meta.last_modified_ms,
                attrs
            ],
        )
        .map_err(internal)?;
        if let Some(upload) = finish_upload {
            let mut stmt = tx
                .prepare("SELECT file FROM parts WHERE upload_id = ?1")
                .map_err(internal)?;
            let parts: Vec<String> = stmt
                .query_map([upload], |r| r.get(0))
                .map_err(internal)?
                .collect::<Result<_, _>>()
                .map_err(internal)?;
            drop(stmt);
            unlink.extend(parts);
            tx.execute("DELETE FROM parts WHERE upload_id = ?1", [upload])
                .map_err(internal)?;
            tx.execute("DELETE FROM uploads WHERE id = ?1", [upload])
                .map_err(internal)?;
        }
        let seq = self.next_sequencer();
        let pending = queue(
            &tx,
            bucket,
            &targets,
            event,
            &meta.key,
            Some((meta.size, &meta.etag)),
            seq,
        )?;
        tx.commit().map_err(internal)?;
        Ok((unlink, pending))
    }

    /// Deletes `bucket`/`key` if present, queueing its notifications.
    /// Returns the body to unlink and the queued notifications.
    pub(crate) fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        event: &EventInfo,
    ) -> S3Result<(Vec<String>, Vec<Pending>)> {
        let mut db = self.conn();
        let tx = db.transaction().map_err(internal)?;
        let Some(targets) = notification_of(&tx, bucket)? else {
            return Err(no_such_bucket());
        };
        let file: Option<String> = tx
            .query_row(
                "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING file",
                params![bucket, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(internal)?;
        let Some(file) = file else {
            return Ok((Vec::new(), Vec::new()));
        };
        let seq = self.next_sequencer();
        let pending = queue(&tx, bucket, &targets, event, key, None, seq)?;
        tx.commit().map_err(internal)?;
        Ok((vec![file], pending))
    }

    // ---- multipart uploads ----

    pub(crate) fn create_upload(&self, bucket: &str, key: &str, attrs: &Attrs) -> S3Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let attrs = serde_json::to_string(attrs).map_err(internal)?;
        let db = self.conn();
        if !bucket_exists(&db, bucket)? {
            return Err(no_such_bucket());
        }
        db.execute(
            "INSERT INTO uploads (id, bucket, key, created_ms, attrs) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, bucket, key, now_ms(), attrs],
        )
        .map_err(internal)?;
        Ok(id)
    }

    /// The upload `id`, which must be for `bucket`/`key`.
    pub(crate) fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<Upload> {
        let db = self.conn();
        let row: Option<(String, String, String)> = db
            .query_row(
                "SELECT bucket, key, attrs FROM uploads WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(internal)?;
        match row {
            Some((b, k, attrs)) if b == bucket && k == key => Ok(Upload {
                attrs: serde_json::from_str(&attrs).unwrap_or_default(),
            }),
            _ => Err(no_such_upload()),
        }
    }

    /// Records part `number` of upload `id`; returns the body it replaced.
    pub(crate) fn put_part(&self, id: &str, part: &PartMeta) -> S3Result<Vec<String>> {
        let mut db = self.conn();
        let tx = db.transaction().map_err(internal)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM uploads WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(internal)?;
        if !exists {
            return Err(no_such_upload());
        }
        let old: Vec<String> = tx
            .query_row(
                "SELECT file FROM parts WHERE upload_id = ?1 AND number = ?2",
                params![id, part.number],
                |r| r.get(0),
            )
            .optional()
            .map_err(internal)?
            .into_iter()
            .collect();
        tx.execute(
            "INSERT OR REPLACE INTO parts (upload_id, number, file, size, etag, last_modified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                part.number,
                part.file,
                i64::try_from(part.size).map_err(internal)?,
                part.etag,
                part.last_modified_ms
            ],
        )
        .map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(old)
    }

    pub(crate) fn parts(&self, id: &str) -> S3Result<Vec<PartMeta>> {
        let db = self.conn();
        let mut stmt = db
            .prepare(
                "SELECT number, file, size, etag, last_modified_ms FROM parts
                 WHERE upload_id = ?1 ORDER BY number",
            )
            .map_err(internal)?;
        stmt.query_map([id], |r| {
            Ok(PartMeta {
                number: r.get(0)?,
                file: r.get(1)?,
                size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                etag: r.get(3)?,
                last_modified_ms: r.get(4)?,
            })
        })
        .map_err(internal)?
        .collect::<Result<_, _>>()
        .map_err(internal)
    }

    /// Forgets upload `id`; returns its part bodies to unlink.
    pub(crate) fn abort_upload(&self, id: &str) -> S3Result<Vec<String>> {
        let files: Vec<String> = self.parts(id)?.into_iter().map(|p| p.file).collect();
        let mut db = self.conn();
        let tx = db.transaction().map_err(internal)?;
        tx.execute("DELETE FROM parts WHERE upload_id = ?1", [id])
            .map_err(internal)?;
        let n = tx
            .execute("DELETE FROM uploads WHERE id = ?1", [id])
            .map_err(internal)?;
        if n == 0 {
            return Err(no_such_upload());
        }
        tx.commit().map_err(internal)?;
        Ok(files)
    }

    // ---- the notification outbox ----

    /// Every notification not yet handed over (at startup: those a crash
    /// or a failed delivery left).
    pub(crate) fn outbox(&self) -> S3Result<Vec<Pending>> {
        let db = self.conn();
        let mut stmt = db
            .prepare(
                "SELECT id, function_arn, bucket, payload, trace_header FROM outbox ORDER BY id",
            )
            .map_err(internal)?;
        stmt.query_map([], |r| {
            Ok(Pending {
                id: r.get(0)?,
                function_arn: r.get(1)?,
                bucket: r.get(2)?,
                payload: r.get(3)?,
                trace_header: r.get(4)?,
            })
        })
        .map_err(internal)?
        .collect::<Result<_, _>>()
        .map_err(internal)
    }

    pub(crate) fn delivered(&self, id: i64) -> S3Result<()> {
        let db = self.conn();
        db.execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map_err(internal)?;
        Ok(())
    }
}

fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectMeta> {
    let attrs: String = r.get(5)?;
    Ok(ObjectMeta {
        key: r.get(0)?,
        file: r.get(1)?,
        size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        etag: r.get(3)?,
        last_modified_ms: r.get(4)?,
        attrs: serde_json::from_str(&attrs).unwrap_or_default(),
    })
}

fn bucket_exists(db: &Connection, name: &str) -> S3Result<bool> {
    db.query_row(
        "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )
    .map_err(internal)
}

/// The bucket's notification targets; `None` when there is no such bucket.
fn notification_of(db: &Connection, bucket: &str) -> S3Result<Option<Vec<Target>>> {
    let row: Option<Option<String>> = db
        .query_row(
            "SELECT notification FROM buckets WHERE name = ?1",
            [bucket],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal)?;
    Ok(row.map(|json| {
        json.and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default()
    }))
}

/// Inserts into the outbox one event per target that `event` on `key`
/// matches.
fn queue(
    tx: &Connection,
    bucket: &str,
    targets: &[Target],
    event: &EventInfo,
    key: &str,
    object: Option<(u64, &str)>,
    sequencer: u64,
) -> S3Result<Vec<Pending>> {
    let mut out = Vec::new();
    for t in targets.iter().filter(|t| t.matches(&event.event_name, key)) {
        let payload = notify::event_json(event, t, bucket, key, object, sequencer);
        tx.execute(
            "INSERT INTO outbox (function_arn, bucket, payload, trace_header) VALUES (?1, ?2, ?3, ?4)",
            params![t.function_arn, bucket, payload, event.trace_header],
        )
        .map_err(internal)?;
        out.push(Pending {
            id: tx.last_insert_rowid(),
            function_arn: t.function_arn.clone(),
            bucket: bucket.to_string(),
            payload,
            trace_header: event.trace_header.clone(),
        });
    }
    Ok(out)
}

pub(crate) fn no_such_bucket() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucket,
        "The specified bucket does not exist",
    )
}

pub(crate) fn no_such_upload() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventInfo {
        EventInfo {
            event_name: "ObjectCreated:Put".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            principal_id: "AWS:AKID".into(),
            source_ip: "127.0.0.1".into(),
            request_id: "R".into(),
            host_id: "H".into(),
            time_ms: 0,
            trace_header: None,
        }
    }

    /// Writes `data` as a complete body and commits it as `key`.
    fn put(store: &ObjectStore, key: &str, data: &[u8]) -> (String, Vec<String>) {
        let temp = store.temp_path();
        std::fs::write(&temp, data).unwrap();
        let file = store.install(&temp).unwrap();
        let meta = ObjectMeta {
            key: key.into(),
            file: file.clone(),
            size: data.len() as u64,
            etag: "e".into(),
            last_modified_ms: 0,
            attrs: Attrs::default(),
        };
        let (unlink, _) = store.commit_object("b", &meta, &event(), None).unwrap();
        (file, unlink)
    }

    #[test]
    fn a_crash_leaves_only_unreferenced_files_which_open_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store.create_bucket("b").unwrap();
        let (first, unlink) = put(&store, "k", b"one");
        assert!(unlink.is_empty());
        // An overwrite names the old body for unlinking after the commit;
        // a crash before that leaves it on disk, unreferenced.
        let (second, unlink) = put(&store, "k", b"two");
        assert_eq!(unlink, vec![first.clone()]);
        // A body installed but never committed, and a half-written temp.
        let orphan = store.install(&{
            let t = store.temp_path();
            std::fs::write(&t, b"orphan").unwrap();
            t
        });
        let orphan = orphan.unwrap();
        let half = store.temp_path();
        std::fs::write(&half, b"half").unwrap();
        drop(store);

        let store = ObjectStore::open(dir.path()).unwrap();
        assert!(!store.body_path(&first).exists(), "replaced body swept");
        assert!(!store.body_path(&orphan).exists(), "uncommitted body swept");
        assert!(!half.exists(), "temporary file swept");
        let meta = store.require_object("b", "k").unwrap();
        assert_eq!(meta.file, second);
        assert_eq!(std::fs::read(store.body_path(&second)).unwrap(), b"two");
    }

    #[test]
    fn notifications_are_found_by_their_function() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let arn = "arn:aws:lambda:us-east-1:000000000000:function:thumbs";
        let target = |id: &str, function_arn: &str| Target {
            id: id.into(),
            function_arn: function_arn.into(),
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: None,
            suffix: Some(".jpg".into()),
        };
        for b in ["photos", "other", "none"] {
            store.create_bucket(b).unwrap();
        }
        store
            .set_notification(
                "photos",
                &[target("a", arn), target("b", "arn:x:function:else")],
            )
            .unwrap();
        store
            .set_notification("other", &[target("c", &format!("{arn}:live"))])
            .unwrap();
        let found = store.notifications_for_function(arn).unwrap();
        let ids: Vec<(&str, &str)> = found
            .iter()
            .map(|(b, t)| (b.as_str(), t.id.as_str()))
            .collect();
        assert_eq!(ids, [("other", "c"), ("photos", "a")], "an alias's too");
        let live = store
            .notifications_for_function(&format!("{arn}:live"))
            .unwrap();
        assert_eq!(live.len(), 1);
        assert!(
            store
                .notifications_for_function("arn:nope")
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.notification("photos").unwrap().len(), 2);
        store.set_notification("photos", &[]).unwrap();
        assert!(store.notification("photos").unwrap().is_empty());
    }

    #[test]
    fn listing_is_in_byte_order_from_the_resume_point() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store.create_bucket("b").unwrap();
        for k in ["b/2", "a", "b/1", "é", "c", "B"] {
            put(&store, k, b"x");
        }
        let keys = |prefix: &str, after: &str| -> Vec<String> {
            store
                .list_objects("b", prefix, after, 100)
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect()
        };
        assert_eq!(keys("", ""), ["B", "a", "b/1", "b/2", "c", "é"]);
        assert_eq!(keys("b/", ""), ["b/1", "b/2"]);
        assert_eq!(keys("", "b/1"), ["b/2", "c", "é"]);
        assert!(store.delete_bucket("b").is_err(), "not empty");
    }
}

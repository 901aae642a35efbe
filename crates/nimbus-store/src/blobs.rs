//! Content-addressed files: each blob is stored once, under its SHA-256.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{StoreError, StoreResult};

/// Blobs under `<root>/sha256/<2 hex>/<64 hex>`, written to a temporary file,
/// fsynced and renamed into place so a reader never sees a partial blob.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl BlobStore {
    /// A blob store rooted at `root` (created if missing).
    pub fn open(root: &Path) -> StoreResult<Self> {
        fs::create_dir_all(root.join("tmp")).map_err(io(root))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Stores `data`, returning its hex SHA-256. Storing the same bytes
    /// twice keeps one copy.
    pub fn put(&self, data: &[u8]) -> StoreResult<String> {
        let hex = hex::encode(Sha256::digest(data));
        let path = self.path(&hex);
        if path.exists() {
            return Ok(hex);
        }
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{hex}.{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(hex)
    }

    /// The path of the blob with this hex digest (which may not exist).
    pub fn path(&self, hex: &str) -> PathBuf {
        let prefix = hex.get(..2).unwrap_or("xx");
        self.root.join("sha256").join(prefix).join(hex)
    }

    /// Reads a whole blob; `None` if it is not stored.
    pub fn get(&self, hex: &str) -> StoreResult<Option<Vec<u8>>> {
        let path = self.path(hex);
        match fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Removes a blob; missing blobs are fine.
    pub fn remove(&self, hex: &str) -> StoreResult<()> {
        let path = self.path(hex);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let a = blobs.put(b"hello").unwrap();
        assert_eq!(
            a,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(blobs.put(b"hello").unwrap(), a);
        assert_eq!(blobs.get(&a).unwrap().unwrap(), b"hello");
        blobs.remove(&a).unwrap();
        assert_eq!(blobs.get(&a).unwrap(), None);
    }
}

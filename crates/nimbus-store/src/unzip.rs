//! Safe extraction of deployment packages.
//!
//! The `zip` crate reads archives; what it does not do is decide what is
//! safe to write. Here every entry must stay inside the target directory,
//! symbolic links may only point inside it, and the bytes actually
//! decompressed (not the sizes the archive claims) are counted against the
//! unzipped-size limit, which stops zip bombs.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Limits applied while unpacking.
#[derive(Debug, Clone, Copy)]
pub struct UnzipLimits {
    /// Most bytes written in total.
    pub max_unzipped: u64,
    /// Most entries.
    pub max_entries: usize,
}

/// Why a package was refused; the message is shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum UnzipError {
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again.")]
    NotAZip,
    #[error("Unzipped size must be smaller than {0} bytes")]
    TooLarge(u64),
    #[error("The deployment package has more than {0} entries")]
    TooManyEntries(usize),
    #[error("The deployment package contains an entry that escapes the code directory: {0}")]
    Escapes(String),
    #[error(
        "The deployment package contains a symbolic link that points outside the code directory: {0}"
    )]
    SymlinkEscapes(String),
    #[error("i/o while unpacking: {0}")]
    Io(#[from] std::io::Error),
}

const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// Unpacks `zip` into the new directory `dest` (which must not exist). On
/// any error the partial directory is removed.
pub fn unpack_zip(zip: &[u8], dest: &Path, limits: UnzipLimits) -> Result<u64, UnzipError> {
    fs::create_dir_all(dest)?;
    let result = unpack_into(zip, dest, limits);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn unpack_into(zip: &[u8], dest: &Path, limits: UnzipLimits) -> Result<u64, UnzipError> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|_| UnzipError::NotAZip)?;
    if archive.len() > limits.max_entries {
        return Err(UnzipError::TooManyEntries(limits.max_entries));
    }
    let mut written: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|_| UnzipError::NotAZip)?;
        let raw_name = entry.name().to_string();
        let rel = safe_relative(&raw_name).ok_or_else(|| UnzipError::Escapes(raw_name.clone()))?;
        let path = dest.join(&rel);
        let mode = entry.unix_mode();
        if entry.is_dir() {
            fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if mode.is_some_and(|m| m & S_IFMT == S_IFLNK) {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .map_err(|_| UnzipError::NotAZip)?;
            let resolved = rel.parent().unwrap_or(Path::new("")).join(&target);
            if Path::new(&target).is_absolute()
                || safe_relative(&resolved.to_string_lossy()).is_none()
            {
                return Err(UnzipError::SymlinkEscapes(format!(
                    "{raw_name} -> {target}"
                )));
            }
            std::os::unix::fs::symlink(&target, &path)?;
            continue;
        }
        // A later entry may not write through a symlink an earlier one made.
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_file(&path)?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        loop {
            let n = entry.read(&mut buf).map_err(|_| UnzipError::NotAZip)?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > limits.max_unzipped {
                return Err(UnzipError::TooLarge(limits.max_unzipped));
            }
            out.write_all(&buf[..n])?;
        }
        // Keep the executable bits (a `bootstrap` must run); never setuid.
        let perm = mode.map_or(0o644, |m| (m & 0o755) | 0o444);
        fs::set_permissions(&path, fs::Permissions::from_mode(perm))?;
    }
    Ok(written)
}

/// The entry name as a relative path with no `..`, root or prefix, after
/// normalising `.` components; `None` if it would leave the directory.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if name.contains('\0') || name.contains('\\') {
        None
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    const LIMITS: UnzipLimits = UnzipLimits {
        max_unzipped: 1 << 20,
        max_entries: 100,
    };

    fn build(entries: &[(&str, &[u8], Option<u32>)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let mut o = SimpleFileOptions::default();
            if let Some(m) = mode {
                o = o.unix_permissions(*m);
            }
            w.start_file(*name, o).unwrap();
            w.write_all(data).unwrap();
        }
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default())
                .unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn unpack(zip: &[u8]) -> (tempfile::TempDir, Result<u64, UnzipError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_zip(zip, &dir.path().join("code"), LIMITS);
        (dir, r)
    }

    #[test]
    fn unpacks_files_dirs_modes_and_inner_links() {
        let zip = build(
            &[
                ("lambda_function.py", b"x = 1\n", None),
                ("bin/bootstrap", b"#!/bin/sh\n", Some(0o755)),
            ],
            &[("lib/link", "../lambda_function.py")],
        );
        let (dir, r) = unpack(&zip);
        assert_eq!(r.unwrap(), 16);
        let code = dir.path().join("code");
        assert_eq!(
            fs::read(code.join("lambda_function.py")).unwrap(),
            b"x = 1\n"
        );
        let mode = fs::metadata(code.join("bin/bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read(code.join("lib/link")).unwrap(), b"x = 1\n");
    }

    #[test]
    fn refuses_path_traversal() {
        for name in ["../evil.py", "a/../../evil.py", "/etc/evil"] {
            let (dir, r) = unpack(&build(&[(name, b"x", None)], &[]));
            assert!(matches!(r, Err(UnzipError::Escapes(_))), "{name}: {r:?}");
            assert!(
                !dir.path().join("code").exists(),
                "partial output is removed"
            );
            assert!(!dir.path().join("evil.py").exists());
        }
    }

    #[test]
    fn refuses_symlinks_out() {
        for target in ["/etc/passwd", "../../outside", "a/../../x"] {
            let (_dir, r) = unpack(&build(&[], &[("link", target)]));
            assert!(
                matches!(r, Err(UnzipError::SymlinkEscapes(_))),
                "{target}: {r:?}"
            );
        }
    }

    #[test]
    fn stops_zip_bombs_by_bytes_written() {
        let big = vec![0u8; 2 << 20];
        let zip = build(&[("bomb", &big, None)], &[]);
        assert!(zip.len() < 10_000, "highly compressible input");
        let (_dir, r) = unpack(&zip);
        assert!(matches!(r, Err(UnzipError::TooLarge(_))), "{r:?}");
    }

    #[test]
    fn refuses_garbage() {
        let (_dir, r) = unpack(b"definitely not a zip");
        assert!(matches!(r, Err(UnzipError::NotAZip)));
    }
}

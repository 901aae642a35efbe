//! The functions under test, as deployment packages.

use std::io::{Cursor, Write};
use std::path::Path;

use anyhow::{Context, Result};
use zip::write::SimpleFileOptions;

/// A no-op Python handler (`lambda_function.handler`).
pub(crate) const PYTHON_NOOP: &str = "def handler(event, context):\n    return None\n";

/// A no-op Node handler (`index.handler`).
pub(crate) const NODE_NOOP: &str = "exports.handler = async (event) => null;\n";

/// A zip holding `files` (name, contents, unix mode).
pub(crate) fn zip(files: &[(&str, &[u8], u32)]) -> Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, mode) in files {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        w.start_file(*name, opts)?;
        w.write_all(data)?;
    }
    Ok(w.finish()?.into_inner())
}

/// The `provided.al2023` package: the rust-echo fixture (built with the
/// official `lambda_runtime` crate) as `bootstrap`, mode 0755.
pub(crate) fn provided_zip(bootstrap: &Path) -> Result<Vec<u8>> {
    let bin = std::fs::read(bootstrap).with_context(|| {
        format!(
            "reading {} (build it with `cargo build --release -p rust-echo`)",
            bootstrap.display()
        )
    })?;
    zip(&[("bootstrap", &bin, 0o755)])
}

pub(crate) fn python_zip() -> Result<Vec<u8>> {
    zip(&[("lambda_function.py", PYTHON_NOOP.as_bytes(), 0o644)])
}

pub(crate) fn node_zip() -> Result<Vec<u8>> {
    zip(&[("index.js", NODE_NOOP.as_bytes(), 0o644)])
}

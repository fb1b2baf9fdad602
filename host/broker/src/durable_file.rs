//! Small files replaced atomically: write a temporary file, flush it, rename it over the old one,
//! flush the directory. A crash leaves the old or the new contents, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Reads the file, `None` when it does not exist.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io::Error::new(err.kind(), format!("read {}: {err}", path.display()))),
    }
}

/// Replaces the file's contents durably.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let context = |what: &str, err: io::Error| io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| context("create the directory of", e))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| context("create", e))?;
    file.write_all(bytes).map_err(|e| context("write", e))?;
    file.sync_all().map_err(|e| context("flush", e))?;
    fs::rename(&tmp, path).map_err(|e| context("replace", e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| context("flush the directory of", e))
}

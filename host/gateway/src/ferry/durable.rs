//! Files written whole or not at all: a temporary name (starting with `.`, which importers and
//! carriers skip), flushed, renamed into place, the directory flushed. A crash leaves the old
//! contents or the new, never a mix.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `name` into `dir` atomically.
pub fn place(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(bytes).with_context(|| format!("write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("flush {}", tmp.display()))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("flush {}", dir.display()))
}

/// Replaces the file at `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    place(dir, &name.to_string_lossy(), bytes)
}

/// The file's contents, `None` when it does not exist.
pub fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

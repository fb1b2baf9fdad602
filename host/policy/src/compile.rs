//! Compiling an uploaded component in a separate process, so that a hostile or pathological upload
//! can neither stall nor crash the broker: the child (`ferrymq plugin compile-check`, hidden) gets a
//! memory limit (RLIMIT_DATA) and a CPU limit, and is killed past its wall-clock budget. Its
//! compiled output lands in the engine's cache, which the broker then loads without compiling again.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How often the broker looks whether the compiling process has finished.
const POLL: Duration = Duration::from_millis(20);

/// How uploads are compiled.
#[derive(Clone, Debug)]
pub enum Compiler {
    /// In a child process of this executable, under these limits.
    Process { exe: PathBuf, cache_dir: PathBuf, instances_max: u32, time: Duration, memory_bytes: u64 },
    /// In this process (tests of the admin API, which run without the `ferrymq` binary).
    InProcess,
}

impl Compiler {
    /// Compiles `bytes` into the engine cache, or says why it could not within the budget.
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let Compiler::Process { exe, cache_dir, instances_max, time, memory_bytes } = self else { return Ok(()) };
        let started = Instant::now();
        let mut child = Command::new(exe)
            .args(["plugin", "compile-check", "--cache-dir"])
            .arg(cache_dir)
            .args(["--instances-max", &instances_max.to_string(), "--memory-bytes-max", &memory_bytes.to_string()])
            .args(["--cpu-s-max", &time.as_secs().max(1).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start the plugin compiler {}", exe.display()))?;
        // Read what it says as it says it, so a chatty child cannot block on a full pipe.
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })
        });
        if let Some(mut stdin) = child.stdin.take() {
            // A child that dies early closes its end; its exit status tells why.
            let _ = stdin.write_all(bytes);
        }
        loop {
            if let Some(status) = child.try_wait().context("wait for the plugin compiler")? {
                let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
                if status.success() {
                    return Ok(());
                }
                let reason = stderr.trim().lines().last().unwrap_or("").trim_start_matches("ferrymq: error: ");
                if reason.is_empty() {
                    bail!(
                        "compiling the component failed ({status}; over the compile memory budget of {memory_bytes} bytes?)"
                    );
                }
                bail!("{reason}");
            }
            if started.elapsed() > *time {
                let _ = child.kill();
                let _ = child.wait();
                bail!("compiling the component took longer than the budget of {} ms", time.as_millis());
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The child's side: limits itself, reads the component on stdin, compiles and checks it into
/// `cache_dir`.
pub fn compile_check(cache_dir: PathBuf, instances_max: u32, memory_bytes: u64, cpu_s: u64) -> anyhow::Result<()> {
    limit(libc::RLIMIT_CPU, cpu_s).context("set the compile CPU limit")?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(ferrymq_plugin::PLUGIN_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .context("read the component")?;
    // The engine is made exactly as the broker makes it (so the cached compilation fits the broker's);
    // its instance pools map memory up front, so the budget counts from what is mapped once it exists.
    let engine = ferrymq_plugin::PluginEngine::with_workers(Some(cache_dir), instances_max, 1, 0)?;
    let mapped = data_bytes().context("read this process's memory use")?;
    limit(libc::RLIMIT_DATA, mapped.saturating_add(memory_bytes)).context("set the compile memory limit")?;
    engine.load(&bytes)?;
    Ok(())
}

/// The process's data segment size (what RLIMIT_DATA counts), from /proc/self/status.
fn data_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmData in /proc/self/status")?;
    Ok(kb * 1024)
}

fn limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit reads the struct we pass and changes only this process's limits.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for the compiling process: a shell script that does `body`.
    fn compiler(dir: &std::path::Path, body: &str, time: Duration) -> Compiler {
        let exe = dir.join("compiler.sh");
        std::fs::write(&exe, format!("#!/bin/sh\ncat > /dev/null\n{body}\n")).expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Compiler::Process { exe, cache_dir: dir.to_path_buf(), instances_max: 1, time, memory_bytes: 64 << 20 }
    }

    #[test]
    fn a_compiler_past_its_budget_is_killed_and_its_refusals_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slow = compiler(dir.path(), "sleep 30", Duration::from_millis(300));
        let started = Instant::now();
        let err = slow.compile(b"component").expect_err("over budget");
        assert!(format!("{err}").contains("longer than the budget of 300 ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "killed, not waited for");
        let refusing =
            compiler(dir.path(), "echo 'ferrymq: error: not a component' >&2; exit 2", Duration::from_secs(10));
        assert_eq!(format!("{}", refusing.compile(b"x").expect_err("refused")), "not a component");
        let ok = compiler(dir.path(), "exit 0", Duration::from_secs(10));
        assert!(ok.compile(&vec![0u8; 1 << 20]).is_ok(), "a large input is read whole");
    }
}

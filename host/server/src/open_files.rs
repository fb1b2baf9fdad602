//! The process's open-file limit: raised to its hard limit at start, and the gRPC port's
//! connection bound kept below it, so that clients opening sockets can never take the descriptors
//! the store needs for its files.

use crate::config::ServerConfig;

/// Descriptors kept for everything but client connections: log segments, consume-queue and index
/// files, checkpoints, plugin caches, replication links, name-server registrations.
pub const RESERVED: u64 = 1_024;

/// Raises the soft open-file limit to the hard one and lowers `grpc.connections_max` where the
/// limit cannot hold it beside [`RESERVED`] and the admin API's connections. Returns the limit.
pub fn fit(config: &mut ServerConfig) -> u64 {
    let reserved = RESERVED + config.admin.connections_max as u64;
    let (limit, connections_max) = fit_within(raise(), "grpc.connections_max", config.grpc.connections_max, reserved);
    config.grpc.connections_max = connections_max;
    limit
}

/// Raises the open-file limit and returns `wanted` (the bound named `setting`), lowered where the
/// limit cannot hold it beside `reserved` other descriptors.
pub fn fit_connections(setting: &str, wanted: usize, reserved: u64) -> usize {
    fit_within(raise(), setting, wanted, reserved).1
}

fn fit_within(limit: u64, setting: &str, wanted: usize, reserved: u64) -> (u64, usize) {
    let room = limit.saturating_sub(reserved).max(1);
    let fitted = if wanted as u64 > room {
        tracing::warn!(
            open_files_max = limit,
            configured = wanted,
            connections_max = room,
            "the open-file limit cannot hold {setting} beside the process's own files; serving fewer \
             connections (raise the limit: ulimit -n, or LimitNOFILE under systemd)"
        );
        usize::try_from(room).unwrap_or(usize::MAX)
    } else {
        wanted
    };
    tracing::info!(open_files_max = limit, connections_max = fitted, "open-file limit");
    (limit, fitted)
}

/// The soft limit after trying to raise it to the hard one.
fn raise() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(err = %std::io::Error::last_os_error(), "could not read the open-file limit");
        return 1_024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::debug!(err = %std::io::Error::last_os_error(), "could not raise the open-file limit");
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_bound_stays_below_the_limit() {
        let mut config = ServerConfig::default();
        config.grpc.connections_max = usize::MAX;
        let limit = fit(&mut config);
        assert!(limit >= 1, "a limit was read");
        let used = config.grpc.connections_max as u64 + RESERVED + config.admin.connections_max as u64;
        assert!(used <= limit.max(RESERVED + config.admin.connections_max as u64 + 1), "{used} > {limit}");
    }

    #[test]
    fn a_bound_the_limit_can_hold_is_kept_and_one_it_cannot_is_lowered_below_it() {
        assert_eq!(fit_within(1_024, "x", 500, 64), (1_024, 500));
        assert_eq!(fit_within(1_024, "x", 5_000, 64), (1_024, 960));
        assert_eq!(fit_within(10, "x", 5_000, 64), (10, 1), "at least one connection");
    }
}

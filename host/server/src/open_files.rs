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
    let limit = raise();
    let room = limit.saturating_sub(RESERVED + config.admin.connections_max as u64).max(1);
    let wanted = config.grpc.connections_max as u64;
    if wanted > room {
        tracing::warn!(
            open_files_max = limit,
            configured = wanted,
            connections_max = room,
            "the open-file limit cannot hold grpc.connections_max beside the store's files; serving fewer \
             connections (raise the limit: ulimit -n, or LimitNOFILE under systemd)"
        );
        config.grpc.connections_max = usize::try_from(room).unwrap_or(usize::MAX);
    }
    tracing::info!(open_files_max = limit, grpc_connections_max = config.grpc.connections_max, "open-file limit");
    limit
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
}

//! What a plugin's store holds, and the host side of its imports: logging, configuration, batch
//! bodies, WASI with nothing granted, and outgoing HTTP limited to an allowlist.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrymq_proto::throttle::Throttle;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::filter::ferrymq::plugin::{batch, host};

/// Gives the body of message `index` of the current batch, on request.
pub type BodySource = Box<dyn Fn(u32) -> Option<Vec<u8>> + Send>;

/// Longest trap reason taken from a plugin's log (it reaches producers and logs as one line).
const REASON_CHARS_MAX: usize = 512;
/// Longest log line kept from a plugin.
const LOG_LINE_BYTES_MAX: usize = 4096;
/// Time allowed to connect to, and to hear back from, an allowlisted HTTP service.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Store data of one plugin instance.
pub(crate) struct PluginState {
    pub(crate) name: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Allowlist,
    pub(crate) limits: StoreLimits,
    config: Arc<Vec<(String, String)>>,
    /// Where `batch.body` finds the bodies of the batch being filtered.
    pub(crate) bodies: Option<BodySource>,
    log_window: Instant,
    log_lines: u32,
    log_lines_per_s_max: u32,
    pub(crate) log_dropped: u64,
    /// The last error-level line the plugin logged during the current call: an SDK logs why it is
    /// about to trap (a panic's message, an exception), and that line becomes the trap's reason.
    pub(crate) last_error: Option<String>,
}

impl PluginState {
    pub(crate) fn new(
        name: Arc<str>,
        limits: StoreLimits,
        config: Arc<Vec<(String, String)>>,
        http_allowlist: Arc<HashSet<String>>,
        log_lines_per_s_max: u32,
        inherit_stderr: bool,
    ) -> Self {
        // Nothing inherited, no arguments, environment, files or network; stderr only where a
        // developer runs the plugin by hand (`ferrymq plugin test`).
        let mut wasi = WasiCtx::builder();
        if inherit_stderr {
            wasi.inherit_stderr();
        }
        Self {
            name,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: Allowlist { hosts: http_allowlist },
            limits,
            config,
            bodies: None,
            log_window: Instant::now(),
            log_lines: 0,
            log_lines_per_s_max,
            log_dropped: 0,
            last_error: None,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: host::Level, message: String) {
        if self.log_window.elapsed() >= Duration::from_secs(1) {
            self.log_window = Instant::now();
            self.log_lines = 0;
        }
        let cut = message.char_indices().nth(LOG_LINE_BYTES_MAX).map_or(message.len(), |(i, _)| i);
        let message = &message[..cut];
        if matches!(level, host::Level::Error) {
            // Kept even past the rate limit: it may be the reason of the trap that follows.
            let first_line = message.lines().next().unwrap_or_default();
            self.last_error = Some(first_line.chars().take(REASON_CHARS_MAX).collect());
        }
        if self.log_lines >= self.log_lines_per_s_max {
            self.log_dropped += 1;
            return;
        }
        self.log_lines += 1;
        let plugin = &*self.name;
        match level {
            host::Level::Trace => tracing::trace!(%plugin, "{message}"),
            host::Level::Debug => tracing::debug!(%plugin, "{message}"),
            host::Level::Info => tracing::info!(%plugin, "{message}"),
            host::Level::Warn => tracing::warn!(%plugin, "{message}"),
            host::Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.as_ref().clone()
    }
}

impl batch::Host for PluginState {
    fn body(&mut self, index: u32) -> Option<Vec<u8>> {
        self.bodies.as_ref().and_then(|source| source(index))
    }
}

impl crate::bindings::route::ferrymq::plugin::types::Host for PluginState {}

/// Outgoing HTTP hook: only hosts (`host` or `host:port`) on the binding's allowlist are reached.
struct Allowlist {
    hosts: Arc<HashSet<String>>,
}

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

impl Allowlist {
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else { return false };
        let with_port = uri.port_u16().map(|p| format!("{host}:{p}"));
        self.hosts.contains(&host) || with_port.is_some_and(|hp| self.hosts.contains(&hp))
    }
}

impl WasiHttpHooks for Allowlist {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _body_future: IoFuture,
    ) -> Box<
        dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<wasmtime_wasi_http::WasiBody>, IoFuture)>>
            + Send,
    > {
        if !self.allows(request.uri()) {
            static REFUSED: Throttle = Throttle::per_second(5);
            if let Some(suppressed) = REFUSED.admit() {
                tracing::warn!(uri = %request.uri(), suppressed, "plugin HTTP request refused: host not on the binding's allowlist");
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: Some(HTTP_CONNECT_TIMEOUT),
            first_byte_timeout: Some(HTTP_FIRST_BYTE_TIMEOUT),
            ..options.unwrap_or_default()
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

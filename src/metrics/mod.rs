//! The Prometheus endpoint: `GET /metrics` on metrics_addr. Figures come from a recorder of
//! pgmux's own (metrics-exporter-prometheus, never installed as a global): pool and counter
//! figures are read from the same snapshots as SHOW POOLS and SHOW STATS at scrape time; the
//! time histograms are pgmux's own, kept by each pool as transactions, queries and waits end.
//! What it reads of the running process comes through [`Source`], which `shared` implements.

use crate::config::Config;
use crate::pool::Pool;
use crate::shutdown::ShutdownMode;
use crate::stats::{Histogram, Timing, BOUNDS_US};
use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the endpoint reads of the running process.
pub trait Source: Send + Sync + 'static {
    /// Every pool, as SHOW POOLS lists them.
    fn pools(&self) -> Vec<Arc<Pool>>;
    /// Client connections open now.
    fn clients(&self) -> usize;
    /// The shutdown under way, if any.
    fn shutdown(&self) -> Option<ShutdownMode>;
    /// The configuration in force: the databases readiness probes.
    fn config(&self) -> Arc<Config>;
}

/// Longest HTTP request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

const METADATA: Metadata<'static> = Metadata::new("pgmux", Level::INFO, None);

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every metric the recorder renders, with the `# HELP` text Prometheus shows for it: what it
/// counts and in what unit. Names carry their unit already, so the recorder adds no suffix.
const DESCRIBED: [(&str, Kind, Unit, &str); 19] = [
    (
        "pgmux_client_connections",
        Kind::Gauge,
        Unit::Count,
        "Client connections open now: logging in, in a pool or on the admin console (connections).",
    ),
    (
        "pgmux_pool_clients_active",
        Kind::Gauge,
        Unit::Count,
        "Clients of the pool not waiting for a server: linked to one or idle (clients; SHOW POOLS cl_active).",
    ),
    (
        "pgmux_pool_clients_waiting",
        Kind::Gauge,
        Unit::Count,
        "Clients of the pool waiting for a server (clients; SHOW POOLS cl_waiting).",
    ),
    (
        "pgmux_pool_clients_pinned",
        Kind::Gauge,
        Unit::Count,
        "Clients of the pool pinned to their server by session state only it holds (clients; SHOW CLIENTS pinned).",
    ),
    (
        "pgmux_pool_servers_active",
        Kind::Gauge,
        Unit::Count,
        "Server connections of the pool linked to a client (connections; SHOW POOLS sv_active).",
    ),
    (
        "pgmux_pool_servers_idle",
        Kind::Gauge,
        Unit::Count,
        "Server connections of the pool idle and ready for a client (connections; SHOW POOLS sv_idle).",
    ),
    (
        "pgmux_pool_servers_login",
        Kind::Gauge,
        Unit::Count,
        "Server connections of the pool being opened and logged in (connections; SHOW POOLS sv_login).",
    ),
    (
        "pgmux_pool_maxwait_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "How long the pool's longest-waiting client has waited for a server, in seconds (SHOW POOLS maxwait).",
    ),
    (
        "pgmux_server_assignments_total",
        Kind::Counter,
        Unit::Count,
        "Times a server connection was assigned to a client, since start (assignments).",
    ),
    (
        "pgmux_transactions_total",
        Kind::Counter,
        Unit::Count,
        "Transactions pooled, since start (transactions; SHOW STATS total_xact_count).",
    ),
    (
        "pgmux_queries_total",
        Kind::Counter,
        Unit::Count,
        "Queries pooled, since start (queries; SHOW STATS total_query_count).",
    ),
    (
        "pgmux_received_bytes_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes received from clients and forwarded to servers, since start (bytes; SHOW STATS total_received).",
    ),
    (
        "pgmux_sent_bytes_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes sent to clients from servers, since start (bytes; SHOW STATS total_sent).",
    ),
    (
        "pgmux_client_logins_total",
        Kind::Counter,
        Unit::Count,
        "Successful client logins to the pool, since start (logins).",
    ),
    (
        "pgmux_client_parses_total",
        Kind::Counter,
        Unit::Count,
        "Named Parse messages received from clients, since start (messages; SHOW STATS total_client_parse_count).",
    ),
    (
        "pgmux_binds_total",
        Kind::Counter,
        Unit::Count,
        "Bind messages of named prepared statements from clients, since start (messages; SHOW STATS total_bind_count).",
    ),
    (
        "pgmux_prepared_cache_hits_total",
        Kind::Counter,
        Unit::Count,
        "Client Parse, Bind and Describe messages of named statements found already prepared on their server, since start (messages).",
    ),
    (
        "pgmux_prepared_cache_misses_total",
        Kind::Counter,
        Unit::Count,
        "Parse messages pgmux sent to servers to prepare a statement they lacked, since start (messages; SHOW STATS total_server_parse_count).",
    ),
    (
        "pgmux_prepared_cache_evictions_total",
        Kind::Counter,
        Unit::Count,
        "Prepared statements closed on a server to stay within max_prepared_statements, since start (statements).",
    ),
];

/// pgmux's own time histograms (rendered by `render_histograms`) and their `# HELP` text.
const HISTOGRAMS: [(Timing, &str, &str); 3] = [
    (
        Timing::Transaction,
        "pgmux_transaction_duration_seconds",
        "Time from a transaction's first message to the ReadyForQuery that ends it, in seconds.",
    ),
    (
        Timing::Query,
        "pgmux_query_duration_seconds",
        "Time from a query's first client message to the last reply its server owed, in seconds.",
    ),
    (
        Timing::Wait,
        "pgmux_wait_duration_seconds",
        "Time a client waited to be assigned a server connection, one sample per assignment, in seconds.",
    ),
];

pub struct Metrics {
    recorder: PrometheusRecorder,
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        for (name, kind, unit, help) in DESCRIBED {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, Some(unit), help),
                Kind::Gauge => recorder.describe_gauge(name, Some(unit), help),
            }
        }
        Metrics { recorder }
    }
}

impl Metrics {
    /// The exposition text, with current pool and counter figures.
    pub fn render(&self, source: &impl Source) -> String {
        let r = &self.recorder;
        let gauge = |name, labels: &[(&'static str, &str)], value: f64| {
            r.register_gauge(&key(name, labels), &METADATA).set(value);
        };
        let counter = |name, labels: &[(&'static str, &str)], value: u64| {
            r.register_counter(&key(name, labels), &METADATA)
                .absolute(value);
        };
        gauge("pgmux_client_connections", &[], source.clients() as f64);
        let pools = source.pools();
        for pool in &pools {
            let s = pool.snapshot();
            let labels = [("database", s.database.as_str()), ("user", s.user.as_str())];
            let active_servers = s.servers.saturating_sub(s.idle + s.connecting);
            gauge(
                "pgmux_pool_clients_active",
                &labels,
                s.clients.saturating_sub(s.waiting) as f64,
            );
            gauge("pgmux_pool_clients_waiting", &labels, s.waiting as f64);
            gauge("pgmux_pool_clients_pinned", &labels, s.pinned as f64);
            gauge("pgmux_pool_servers_active", &labels, active_servers as f64);
            gauge("pgmux_pool_servers_idle", &labels, s.idle as f64);
            gauge("pgmux_pool_servers_login", &labels, s.connecting as f64);
            gauge(
                "pgmux_pool_maxwait_seconds",
                &labels,
                s.max_wait.as_secs_f64(),
            );
            let t = pool.stats.totals();
            counter(
                "pgmux_server_assignments_total",
                &labels,
                t.server_assignment_count,
            );
            counter("pgmux_transactions_total", &labels, t.xact_count);
            counter("pgmux_queries_total", &labels, t.query_count);
            counter("pgmux_received_bytes_total", &labels, t.bytes_received);
            counter("pgmux_sent_bytes_total", &labels, t.bytes_sent);
            counter("pgmux_client_logins_total", &labels, t.client_login_count);
            counter("pgmux_client_parses_total", &labels, t.client_parse_count);
            counter("pgmux_binds_total", &labels, t.bind_count);
            counter(
                "pgmux_prepared_cache_hits_total",
                &labels,
                t.prepared_hit_count,
            );
            counter(
                "pgmux_prepared_cache_misses_total",
                &labels,
                t.server_parse_count,
            );
            counter(
                "pgmux_prepared_cache_evictions_total",
                &labels,
                t.prepared_eviction_count,
            );
        }
        let mut text = self.recorder.handle().render();
        render_histograms(&mut text, &pools);
        text
    }
}

/// Appends every pool's time histograms, each metric's series together under one TYPE line.
fn render_histograms(out: &mut String, pools: &[Arc<crate::pool::Pool>]) {
    if pools.is_empty() {
        return;
    }
    let labelled: Vec<_> = pools
        .iter()
        .map(|p| {
            let labels = format!(
                "database=\"{}\",user=\"{}\"",
                escape_label(&p.database),
                escape_label(&p.user)
            );
            (labels, &p.stats)
        })
        .collect();
    for (timing, name, help) in HISTOGRAMS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (labels, stats) in &labelled {
            render_histogram(out, name, labels, &stats.histogram(timing));
        }
    }
}

/// Appends the `_bucket`, `_sum` and `_count` lines of one series; `labels` is the rendered
/// label list without braces (`database="app",user="app"`).
fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (bound, count) in BOUNDS_US.iter().zip(&h.counts) {
        cumulative += count;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    cumulative += h.counts[BOUNDS_US.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let sum = h.sum_us as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// A label value as Prometheus' text format quotes it.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Serves /metrics until stopped. One short request per connection.
/// `accepting` is false while another process serves the endpoint on the same socket (a
/// takeover).
pub async fn serve<S: Source>(
    listener: TcpListener,
    source: Arc<S>,
    mut accepting: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = Arc::new(Metrics::default());
    loop {
        let open = *accepting.borrow_and_update();
        let accept = async {
            match open {
                true => listener.accept().await,
                false => std::future::pending().await,
            }
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => return,
            Ok(()) = accepting.changed() => continue,
            a = accept => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (source, metrics) = (source.clone(), metrics.clone());
        tokio::spawn(async move {
            let answer = answer(stream, &*source, &metrics);
            let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
        });
    }
}

/// Ready when not shutting down and at least one configured database's server accepts a TCP
/// connection, or one of its pools holds a server already.
async fn readiness(source: &impl Source) -> Result<String, String> {
    if let Some(mode) = source.shutdown() {
        return Err(format!("shutting down ({mode:?})"));
    }
    if source.pools().iter().any(|p| p.snapshot().servers > 0) {
        return Ok("serving with open server connections".into());
    }
    let config = source.config();
    if config.databases.is_empty() {
        return Err("no databases configured".into());
    }
    for (name, db) in &config.databases {
        let host = config.server_host(db);
        let connect = async {
            match crate::address::socket_dir(&host) {
                Some(dir) => {
                    let path = crate::address::socket_path(dir, db.port);
                    tokio::net::UnixStream::connect(path).await.map(drop)
                }
                None => tokio::net::TcpStream::connect((host.as_str(), db.port))
                    .await
                    .map(drop),
            }
        };
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            return Ok(format!("database {name} reachable"));
        }
    }
    Err("no configured database is reachable".into())
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    source: &impl Source,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics.render(source),
        ),
        (b"GET", b"/health/live") => ("200 OK", "text/plain", "live\n".into()),
        (b"GET", b"/health/ready") => match readiness(source).await {
            Ok(why) => ("200 OK", "text/plain", format!("ready: {why}\n")),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics, /health/live or /health/ready\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_with_le_bounds() {
        let mut h = Histogram {
            sum_us: 60_000_201,
            ..Histogram::default()
        };
        h.counts[0] = 2;
        h.counts[1] = 1;
        h.counts[BOUNDS_US.len()] = 1;
        let mut out = String::new();
        render_histogram(&mut out, "t", "db=\"x\"", &h);
        for line in [
            "t_bucket{db=\"x\",le=\"0.0001\"} 2\n",
            "t_bucket{db=\"x\",le=\"0.00025\"} 3\n",
            "t_bucket{db=\"x\",le=\"30\"} 3\n",
            "t_bucket{db=\"x\",le=\"+Inf\"} 4\n",
            "t_count{db=\"x\"} 4\n",
            "t_sum{db=\"x\"} 60.000201\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }
}

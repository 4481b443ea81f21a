//! The Prometheus endpoint, scraped over HTTP and parsed: counters move with traffic.

use crate::harness::{shared_cluster, PgmuxConfig};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn scrape(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Samples of the exposition text: `name{labels}` -> value; comments skipped.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_pools_counters_and_histograms() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = "metrics_addr = \"127.0.0.1:0\"".into();
    let pgmux = cfg.start().await;
    let addr = pgmux.metrics_addr();
    let client = pgmux.connect("app", "app").await;
    client.simple_query("SELECT 1").await.unwrap();
    let (status, body) = scrape(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let before = samples(&body);
    let labels = "{database=\"app\",user=\"app\"}";
    let xacts = |s: &HashMap<String, f64>| s[&format!("pgmux_transactions_total{labels}")];
    assert!(xacts(&before) >= 1.0);
    assert_eq!(before[&format!("pgmux_pool_clients_active{labels}")], 1.0);
    for _ in 0..10 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    let (_, body) = scrape(addr, "/metrics").await;
    let after = samples(&body);
    assert!(
        xacts(&after) >= xacts(&before) + 10.0,
        "counters move with traffic"
    );
    // One sample per transaction: the histograms agree with the counters, and every sample
    // is in the +Inf bucket.
    for (histogram, counted) in [
        ("transaction", xacts(&after)),
        ("query", after[&format!("pgmux_queries_total{labels}")]),
    ] {
        let name = format!("pgmux_{histogram}_duration_seconds");
        let count = after[&format!("{name}_count{labels}")];
        assert_eq!(count, counted, "{histogram}: {body}");
        let inf = format!("{name}_bucket{{database=\"app\",user=\"app\",le=\"+Inf\"}}");
        assert_eq!(after[&inf], count, "{body}");
        assert!(after[&format!("{name}_sum{labels}")] > 0.0, "{body}");
        assert!(body.contains(&format!("# TYPE {name} histogram")), "{body}");
    }
    let waits = after[&format!("pgmux_wait_duration_seconds_count{labels}")];
    assert!(waits >= 11.0, "one wait per transaction: {body}");
    let (status, _) = scrape(addr, "/nope").await;
    assert!(status.contains("404"));
    let (status, body) = scrape(addr, "/health/live").await;
    assert!(
        status.contains("200") && body == "live\n",
        "{status} {body}"
    );
    let (status, body) = scrape(addr, "/health/ready").await;
    assert!(
        status.contains("200") && body.starts_with("ready"),
        "{status} {body}"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_no_database_is_reachable() {
    let pg = shared_cluster();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = "metrics_addr = \"127.0.0.1:0\"".into();
    let pgmux = cfg.start().await;
    let addr = pgmux.metrics_addr();
    // Point the only database at a port nobody listens on, by reload.
    let path = pgmux.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        &format!("port = {}", pg.port),
        &format!("port = {closed_port}"),
    );
    std::fs::write(&path, text).unwrap();
    pgmux.shared().reload_from_file().unwrap();
    let (status, body) = scrape(addr, "/health/ready").await;
    assert!(
        status.contains("503") && body.contains("not ready"),
        "{status} {body}"
    );
    let (status, _) = scrape(addr, "/health/live").await;
    assert!(status.contains("200"));
    pgmux.stop().await;
}

/// promtool, from Debian's `prometheus` package; the test fails without it rather than pass
/// having checked nothing.
fn promtool() -> std::path::PathBuf {
    let debian = std::path::PathBuf::from("/usr/bin/promtool");
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .or(debian.is_file().then_some(debian))
        .unwrap_or_else(|| {
            panic!(
                "promtool not found on PATH or at /usr/bin/promtool: install Debian's prometheus \
                 package (apt-get install -y prometheus), as .ci/run does"
            )
        })
}

/// A real scrape, after traffic of every kind the metrics count, passes `promtool check metrics`
/// with no warning: every metric has HELP and TYPE, names follow Prometheus' conventions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_passes_promtool_check_metrics() {
    let promtool = promtool();
    let mut cfg = PgmuxConfig::new(shared_cluster());
    cfg.general = "metrics_addr = \"127.0.0.1:0\"".into();
    let pgmux = cfg.start().await;
    let client = pgmux.connect("app", "app").await;
    client.simple_query("SELECT 1; SELECT 2").await.unwrap();
    let statement = client.prepare("SELECT $1::int + 1").await.unwrap();
    for i in 0..5 {
        let row = client.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    let (status, body) = scrape(pgmux.metrics_addr(), "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let s = samples(&body);
    let labels = "{database=\"app\",user=\"app\"}";
    assert!(s[&format!("pgmux_binds_total{labels}")] >= 5.0, "{body}");
    // Every family has its help text, histograms (pgmux's own rendering) included.
    for family in body.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or_default();
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{body}"
        );
    }

    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", promtool.display()));
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\nscrape:\n{body}",
        out.status
    );
    pgmux.stop().await;
}

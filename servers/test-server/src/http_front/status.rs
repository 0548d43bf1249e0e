//! `/health`, `/metrics` and `/status` of the front: the loop's and the server's figures.

use super::*;

impl HttpFront {
    pub(super) fn health(&self, ctx: &mut Context<'_, Note, Timer>, status: Status<'_>) -> Answer {
        let stats = ctx.server().stats();
        let ok = status.ready && status.db_up > 0 && status.db_breaker_closed;
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "connections": stats.connections_active,
            "db": {
                "connections_up": status.db_up,
                "circuit": if status.db_breaker_closed { "closed" } else { "open" },
            },
            "doc_cache": if self.cfg.cache_bytes > 0 && status.db_watching { "on" } else { "off" },
        });
        Answer::json(if ok { 200 } else { 503 }, body.to_string().into_bytes())
    }

    pub(super) fn metrics(&self, ctx: &mut Context<'_, Note, Timer>, status: Status<'_>) -> Answer {
        let s = ctx.server().stats();
        let mut t = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                t,
                "# HELP netmod_{name} {help}\n# TYPE netmod_{name} {kind}\nnetmod_{name} {value}\n"
            );
        };
        metric(
            "connections_active",
            "gauge",
            "Connections open now.",
            s.connections_active,
        );
        metric(
            "connections_total",
            "counter",
            "Connections since start.",
            s.connections_total,
        );
        metric("bytes_in_total", "counter", "Bytes received.", s.bytes_in);
        metric("bytes_out_total", "counter", "Bytes sent.", s.bytes_out);
        metric(
            "messages_in_total",
            "counter",
            "Frames and HTTP requests received.",
            s.messages_in,
        );
        metric(
            "messages_out_total",
            "counter",
            "Messages queued for sending.",
            s.messages_out,
        );
        metric(
            "db_link_connections_up",
            "gauge",
            "Connections to db-server up (loop serving this request).",
            status.db_up as u64,
        );
        metric(
            "db_link_in_flight",
            "gauge",
            "Requests waiting for db-server (loop serving this request).",
            status.db_in_flight as u64,
        );
        metric(
            "db_link_circuit_open",
            "gauge",
            "1 while the db-server circuit breaker is open.",
            u64::from(!status.db_breaker_closed),
        );
        let cache = &self.cfg.counters;
        metric(
            "doc_cache_hits_total",
            "counter",
            "GET /docs answered from memory (all loops).",
            cache.cache_hits.load(Ordering::Relaxed),
        );
        metric(
            "doc_cache_misses_total",
            "counter",
            "GET /docs sent to db-server while the cache was on (all loops).",
            cache.cache_misses.load(Ordering::Relaxed),
        );
        metric(
            "doc_cache_entries",
            "gauge",
            "Documents kept in memory, current (all loops).",
            cache.cache_entries.load(Ordering::Relaxed) as u64,
        );
        let (n, sum_us) = (
            status.rtt.count.load(Ordering::Relaxed),
            status.rtt.sum_us.load(Ordering::Relaxed),
        );
        let _ = write!(
            t,
            "# HELP netmod_ping_rtt_seconds Round trips of the server's pings to frame clients.\n\
             # TYPE netmod_ping_rtt_seconds summary\n\
             netmod_ping_rtt_seconds_sum {}\nnetmod_ping_rtt_seconds_count {n}\n",
            sum_us as f64 / 1e6
        );
        let (avg_sum_us, clients) = status.rtt_averages;
        let _ = write!(
            t,
            "# HELP netmod_ping_rtt_average_seconds Mean over the frame clients of the loop \
             serving this request of each one's moving average of its last 100 ping round trips.\n\
             # TYPE netmod_ping_rtt_average_seconds gauge\n\
             netmod_ping_rtt_average_seconds {}\n",
            if clients == 0 {
                0.0
            } else {
                avg_sum_us as f64 / clients as f64 / 1e6
            }
        );
        t.push_str("# HELP netmod_http_requests_total HTTP requests answered, by status class.\n");
        t.push_str("# TYPE netmod_http_requests_total counter\n");
        for (i, n) in self.cfg.counters.by_class.iter().enumerate() {
            let _ = writeln!(
                t,
                "netmod_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
        t.push_str("# HELP netmod_errors_total Connection-level errors, by kind (io, timeout, tls, ...).\n");
        t.push_str("# TYPE netmod_errors_total counter\n");
        for kind in engine::ErrorKind::ALL {
            let _ = writeln!(
                t,
                "netmod_errors_total{{kind=\"{}\"}} {}",
                kind.name(),
                s.error(kind)
            );
        }
        Answer {
            status: 200,
            body: super::Body::Owned(t.into_bytes()),
            kind: Kind::Metrics,
            allow: None,
            stale: false,
            vary: None,
        }
    }
}

/// The status page: one self-contained file (no CDN, no build step) that polls `/status`.
fn page_bytes() -> Arc<[u8]> {
    static PAGE: std::sync::OnceLock<Arc<[u8]>> = std::sync::OnceLock::new();
    Arc::clone(PAGE.get_or_init(|| {
        Arc::from(shared::page::assemble(include_str!("status.html")).into_bytes())
    }))
}

/// A browser asking for `/status` (`Accept` names `text/html`) gets the page; anything else
/// (curl, scripts, the page's own polling) the JSON.
pub(super) fn wants_page(head: &http1::Head) -> bool {
    head.header("accept")
        .is_some_and(|a| a.contains("text/html"))
}

pub(super) fn page() -> Answer {
    Answer {
        status: 200,
        body: Body::Shared(page_bytes()),
        kind: Kind::Html,
        allow: None,
        stale: false,
        vary: None,
    }
}

impl HttpFront {
    /// `GET /status` as JSON: the server's figures, and this loop's view of the db link.
    pub(super) fn status(&self, ctx: &mut Context<'_, Note, Timer>, status: Status<'_>) -> Answer {
        let server = ctx.server();
        let s = server.stats();
        let counters = &self.cfg.counters;
        let (hits, misses) = (
            counters.cache_hits.load(Ordering::Relaxed),
            counters.cache_misses.load(Ordering::Relaxed),
        );
        let (rtt_n, rtt_sum_us) = (
            status.rtt.count.load(Ordering::Relaxed),
            status.rtt.sum_us.load(Ordering::Relaxed),
        );
        let by_class: Vec<u64> = counters
            .by_class
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let body = serde_json::json!({
            "program": "test-server",
            "version": shared::VERSION,
            "loops": server.connections_by_loop().len(),
            "connections": {
                "active": s.connections_active,
                "total": s.connections_total,
                "by_loop": server.connections_by_loop(),
            },
            "bytes": { "in": s.bytes_in, "out": s.bytes_out },
            "messages": { "in": s.messages_in, "out": s.messages_out },
            "http_responses": {
                "1xx": by_class[0], "2xx": by_class[1], "3xx": by_class[2],
                "4xx": by_class[3], "5xx": by_class[4],
            },
            "db": {
                "ready": status.ready,
                "connections_up": status.db_up,
                "in_flight": status.db_in_flight,
                "circuit": if status.db_breaker_closed { "closed" } else { "open" },
                "watching": status.db_watching,
                "primary": status
                    .db_primary
                    .and_then(|p| p.lock().ok().map(|p| p.clone()))
                    .filter(|p| !p.is_empty()),
            },
            "doc_cache": {
                "on": self.cfg.cache_bytes > 0 && status.db_watching,
                "hits": hits,
                "misses": misses,
                "hit_ratio": if hits + misses == 0 { None } else { Some(hits as f64 / (hits + misses) as f64) },
                "entries": self.cfg.counters.cache_entries.load(Ordering::Relaxed),
            },
            "ping_rtt": {
                "count": rtt_n,
                "mean_ms": if rtt_n == 0 { None } else { Some(rtt_sum_us as f64 / rtt_n as f64 / 1000.0) },
                "bucket_bounds_ms": crate::config::RTT_BOUNDS_US.iter().map(|b| *b as f64 / 1000.0).collect::<Vec<_>>(),
                "buckets": status.rtt.bucket_counts(),
            },
        });
        Answer::json(200, body.to_string().into_bytes())
    }
}

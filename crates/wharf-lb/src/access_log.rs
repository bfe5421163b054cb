//! The access log: one line per request, written to a file by a thread of its own (the
//! request path only formats the line and hands it over) or emitted as a `tracing`
//! event with target `wharf_lb::access`.
//!
//! A line reads: time (UTC, RFC 3339 with milliseconds), client `ip:port`, listener
//! port, method, path with query, HTTP version, status, target `host:port` (or `-`),
//! time waiting for the target's response headers in ms (or `-`), total time to the
//! response headers in ms:
//!
//! ```text
//! 2026-11-27T09:12:01.532Z 127.0.0.1:50312 8080 GET /api/items?page=2 HTTP/1.1 200 127.0.0.1:9001 0.412 0.530
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use http::{Uri, Version};

/// Where access log lines go.
#[derive(Debug, Clone, Default)]
pub enum AccessLog {
    /// Nowhere.
    #[default]
    Off,
    /// `tracing` events at info level, target `wharf_lb::access`.
    Tracing,
    /// Appended to a file.
    File(mpsc::Sender<String>),
}

/// One request, as logged.
#[derive(Debug)]
pub struct AccessEntry<'a> {
    /// The client.
    pub client: SocketAddr,
    /// The listener's port.
    pub port: u16,
    /// The method.
    pub method: &'a str,
    /// The request URI as received.
    pub uri: &'a Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// The status answered.
    pub status: u16,
    /// The target forwarded to.
    pub target: Option<&'a str>,
    /// How long the target took to answer with headers.
    pub target_time: Option<Duration>,
    /// From receiving the request to answering with headers.
    pub total_time: Duration,
}

impl AccessEntry<'_> {
    /// The log line (without newline).
    pub fn line(&self) -> String {
        let mut line = String::with_capacity(160);
        let path = self
            .uri
            .path_and_query()
            .map_or_else(|| self.uri.path(), |pq| pq.as_str());
        let _ = write!(
            line,
            "{} {} {} {} {} {:?} {} {} ",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            self.client,
            self.port,
            self.method,
            path,
            self.version,
            self.status,
            self.target.unwrap_or("-"),
        );
        match self.target_time {
            Some(t) => {
                let _ = write!(line, "{:.3} ", t.as_secs_f64() * 1000.0);
            }
            None => line.push_str("- "),
        }
        let _ = write!(line, "{:.3}", self.total_time.as_secs_f64() * 1000.0);
        line
    }
}

impl AccessLog {
    /// A log appending to `path` (created if missing) from a thread of its own.
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (sender, receiver) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("wharf-lb-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                // Block for a line, then take whatever else is queued before flushing,
                // so that a burst costs one write.
                while let Ok(line) = receiver.recv() {
                    let _ = writeln!(out, "{line}");
                    while let Ok(line) = receiver.try_recv() {
                        let _ = writeln!(out, "{line}");
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(AccessLog::File(sender))
    }

    /// Logs one request; `entry` is only built when the log is on.
    pub fn record<'a>(&self, entry: impl FnOnce() -> AccessEntry<'a>) {
        match self {
            AccessLog::Off => {}
            AccessLog::Tracing => {
                tracing::info!(target: "wharf_lb::access", "{}", entry().line());
            }
            AccessLog::File(sender) => {
                let _ = sender.send(entry().line());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_field() {
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        let line = AccessEntry {
            client: "127.0.0.1:5000".parse().unwrap(),
            port: 8080,
            method: "GET",
            uri: &uri,
            version: Version::HTTP_2,
            status: 502,
            target: Some("10.0.0.1:80"),
            target_time: Some(Duration::from_micros(1500)),
            total_time: Duration::from_micros(2250),
        }
        .line();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            &fields[1..],
            &[
                "127.0.0.1:5000",
                "8080",
                "GET",
                "/a/b?x=1",
                "HTTP/2.0",
                "502",
                "10.0.0.1:80",
                "1.500",
                "2.250"
            ]
        );
        assert!(fields[0].ends_with('Z') && fields[0].contains('T'));
    }
}

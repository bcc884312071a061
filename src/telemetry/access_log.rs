//! The access log: one line per request, JSON or common log format.
//!
//! The request path only fills an [`Entry`] and hands it to a bounded
//! channel with `try_send`; a writer thread formats and writes the lines
//! through a buffer, flushing when it runs out of work. A slow disk fills the
//! channel and further lines are dropped (and counted), never blocking a
//! request.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Version};

use crate::config::{AccessLogConfig, AccessLogFormat};

/// Lines waiting for the writer; more are dropped.
const QUEUE: usize = 16 * 1024;

/// What is known of one request when its response ends.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: Method,
    pub version: Version,
    pub host: Option<String>,
    pub path: String,
    pub status: StatusCode,
    /// Response body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    pub route: Option<String>,
    pub backend: Option<String>,
    pub endpoint: Option<String>,
    pub revision: u64,
    pub retries: u32,
    /// Why sluicegate answered with an error itself, in full (the client
    /// got general terms only).
    pub error: Option<String>,
}

impl Entry {
    /// The fields known when a request arrives; the rest are filled in as
    /// it is served.
    pub fn arrived(
        client: IpAddr,
        method: Method,
        version: Version,
        host: Option<String>,
        path: String,
    ) -> Entry {
        Entry {
            time: SystemTime::now(),
            client,
            method,
            version,
            host,
            path,
            status: StatusCode::OK,
            bytes: 0,
            duration: Duration::ZERO,
            route: None,
            backend: None,
            endpoint: None,
            revision: 0,
            retries: 0,
            error: None,
        }
    }
}

/// The sending side, shared by every request.
#[derive(Debug)]
pub struct AccessLog {
    sender: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the log (appending to a file, or standard output) and starts the
    /// writer thread.
    pub fn start(config: &AccessLogConfig) -> io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match &config.path {
            None => Box::new(io::stdout()),
            Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (sender, receiver) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let format = config.format;
        let counted = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("sluicegate-access-log".into())
            .spawn(move || write_lines(receiver, BufWriter::new(out), format, &counted))?;
        Ok(AccessLog { sender, dropped })
    }

    /// Queues `entry`; drops it when the writer is behind.
    pub fn log(&self, entry: Entry) {
        match self.sender.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_lines(
    receiver: Receiver<Entry>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    format: AccessLogFormat,
    dropped: &AtomicU64,
) {
    let mut line = String::with_capacity(512);
    let mut reported = 0;
    loop {
        let entry = match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(entry) => entry,
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                let now = dropped.load(Ordering::Relaxed);
                if now > reported {
                    tracing::warn!(dropped = now - reported, "access log behind: lines dropped");
                    reported = now;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        line.clear();
        match format {
            AccessLogFormat::Json => json_line(&mut line, &entry),
            AccessLogFormat::Common => common_line(&mut line, &entry),
        }
        line.push('\n');
        if let Err(error) = out.write_all(line.as_bytes()) {
            tracing::warn!(%error, "cannot write the access log");
        }
    }
    let _ = out.flush();
}

fn json_line(line: &mut String, e: &Entry) {
    let value = serde_json::json!({
        "time": humantime::format_rfc3339_millis(e.time).to_string(),
        "client": e.client.to_canonical().to_string(),
        "method": e.method.as_str(),
        "host": e.host,
        "path": e.path,
        "protocol": format!("{:?}", e.version),
        "status": e.status.as_u16(),
        "bytes": e.bytes,
        "duration_ms": (e.duration.as_secs_f64() * 1e6).round() / 1e3,
        "route": e.route,
        "backend": e.backend,
        "endpoint": e.endpoint,
        "revision": e.revision,
        "retries": e.retries,
        "error": e.error,
    });
    let _ = write!(line, "{value}");
}

/// `client - - [time] "METHOD path PROTO" status bytes` then extras.
fn common_line(line: &mut String, e: &Entry) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = write!(
        line,
        "{} - - [{}] \"{} {} {:?}\" {} {} host={} route={} backend={} endpoint={} revision={} retries={} duration_ms={:.3}",
        e.client.to_canonical(),
        clf_time(e.time),
        e.method,
        e.path.replace(['"', ' '], "%20"),
        e.version,
        e.status.as_u16(),
        e.bytes,
        dash(&e.host),
        dash(&e.route),
        dash(&e.backend),
        dash(&e.endpoint),
        e.revision,
        e.retries,
        e.duration.as_secs_f64() * 1e3,
    );
    if let Some(error) = &e.error {
        let _ = write!(line, " error={error:?}");
    }
}

/// `23/Nov/2026:11:22:44 +0000`
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_secs(1_795_432_080),
            client: "127.0.0.1".parse().unwrap(),
            method: Method::GET,
            version: Version::HTTP_11,
            host: Some("shop.example.com".into()),
            path: "/cart?id=1".into(),
            status: StatusCode::OK,
            bytes: 42,
            duration: Duration::from_micros(1500),
            route: Some("web".into()),
            backend: Some("blue".into()),
            endpoint: Some("127.0.0.1:8081".into()),
            revision: 3,
            retries: 1,
            error: None,
        }
    }

    #[test]
    fn common_format_line() {
        let mut line = String::new();
        common_line(&mut line, &entry());
        assert_eq!(
            line,
            "127.0.0.1 - - [23/Nov/2026:11:08:00 +0000] \"GET /cart?id=1 HTTP/1.1\" 200 42 \
             host=shop.example.com route=web backend=blue endpoint=127.0.0.1:8081 revision=3 retries=1 duration_ms=1.500"
        );
    }

    #[test]
    fn json_format_line() {
        let mut line = String::new();
        json_line(&mut line, &entry());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-11-23T11:08:00.000Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["endpoint"], "127.0.0.1:8081");
        assert_eq!(v["error"], serde_json::Value::Null);
    }

    #[test]
    fn the_error_detail_is_logged() {
        let mut e = entry();
        e.status = StatusCode::BAD_GATEWAY;
        e.error = Some("upstream failed: connect failed: Connection refused".into());
        let mut line = String::new();
        common_line(&mut line, &e);
        assert!(
            line.ends_with(" error=\"upstream failed: connect failed: Connection refused\""),
            "{line}"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}

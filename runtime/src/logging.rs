//! Where berth's errors and debug logs go: the plain message on stderr, and one line per
//! failure in the `--log` file, in runc's text or JSON shape (callers parse it).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::cli::{GlobalOpts, LogFormat};

/// Writes berth's own messages to the places runc's callers read them from.
#[derive(Debug, Clone)]
pub struct Reporter {
    log: Option<PathBuf>,
    format: LogFormat,
}

impl Reporter {
    pub fn new(global: &GlobalOpts) -> Reporter {
        Reporter { log: global.log.clone(), format: global.log_format }
    }

    /// Reports a failure: the plain message on stderr and one error line in the log file.
    pub fn error(&self, message: &str) {
        eprintln!("{message}");
        if let Some(path) = &self.log {
            // A log we cannot write must not hide the error, which stderr already carries.
            if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = file.write_all(format_line(self.format, "error", message).as_bytes());
            }
        }
    }

    /// Reports a warning (a failing poststop hook): stderr and a warning line in the log.
    pub fn warn(&self, message: &str) {
        eprintln!("{message}");
        if let Some(path) = &self.log {
            if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = file.write_all(format_line(self.format, "warning", message).as_bytes());
            }
        }
    }
}

/// An error and its causes as one line, without libcontainer's repeated wrapper phrases
/// (its init process reports failures through several layers that each add one).
pub fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
        .replace("failed to create container: exec process failed with error error in executing process : ", "")
        .replace('\n', " ")
}

/// One log line in runc's format: logrus text or JSON with level, msg and time.
pub fn format_line(format: LogFormat, level: &str, message: &str) -> String {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({"level": level, "msg": message, "time": time});
            format!("{line}\n")
        }
        LogFormat::Text => {
            format!("time={time:?} level={level} msg={}\n", serde_json::Value::from(message))
        }
    }
}

/// With `--debug`, routes libcontainer's tracing events at debug level into the log file
/// (or stderr), in the chosen format. Without it nothing but the final error is written.
pub fn init_debug(global: &GlobalOpts) -> anyhow::Result<()> {
    if !global.debug {
        return Ok(());
    }
    let writer: Box<dyn Write + Send> = match &global.log {
        Some(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let writer = Mutex::new(writer);
    let builder = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_writer(writer).with_ansi(false);
    match global.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

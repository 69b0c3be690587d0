//! Signal names and numbers as runc's `kill` takes them (`TERM`, `SIGTERM`, `15`), and the stop
//! signals images name, real-time ones included.

use anyhow::{bail, Result};
use nix::sys::signal::Signal;

/// The real-time signals as images, Docker and runc number them: from 34 (the two below are
/// glibc's own; musl keeps a third, so its SIGRTMIN is 35) to 64. systemd's SIGRTMIN+3 is 37.
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// Parses a signal given by name (with or without the SIG prefix, any case) or number.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| anyhow::anyhow!("unknown signal {text:?}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    match name.parse::<Signal>() {
        Ok(signal) => Ok(signal),
        Err(_) => bail!("unknown signal {text:?}: give a name such as TERM or KILL, or a number"),
    }
}

/// A signal as a number, for the stop signal an image or `unpack --stop-signal` names:
/// what `parse_signal` takes, the aliases IOT and POLL, and the real-time signals (a number
/// up to 64, `RTMIN+N`, `RTMAX-N`; systemd images stop on `SIGRTMIN+3`).
pub fn parse_signal_number(text: &str) -> Result<i32> {
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: i32, offset: &str, sign: i32| -> Result<i32> {
        let offset: i32 = offset.parse().map_err(|_| anyhow::anyhow!("unknown signal {text:?}"))?;
        let number = offset.checked_mul(sign).and_then(|step| base.checked_add(step));
        let Some(number) = number.filter(|number| (RTMIN..=RTMAX).contains(number)) else {
            bail!("signal {text:?} is outside the real-time signals {RTMIN}-{RTMAX}");
        };
        Ok(number)
    };
    match bare {
        "IOT" => return Ok(libc::SIGIOT),
        "POLL" => return Ok(libc::SIGPOLL),
        "RTMIN" => return Ok(RTMIN),
        "RTMAX" => return Ok(RTMAX),
        _ => {}
    }
    if let Some(offset) = bare.strip_prefix("RTMIN+") {
        return realtime(RTMIN, offset, 1);
    }
    if let Some(offset) = bare.strip_prefix("RTMAX-") {
        return realtime(RTMAX, offset, -1);
    }
    match text.parse::<i32>() {
        Ok(number) if (1..=RTMAX).contains(&number) => Ok(number),
        Ok(_) => bail!("signal number {text} is out of range (1-{RTMAX})"),
        Err(_) => parse_signal(text).map(|signal| signal as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_take_real_time_signals_and_aliases() {
        assert_eq!(parse_signal_number("SIGRTMIN+3").unwrap(), 37);
        assert_eq!(parse_signal_number("RTMAX-1").unwrap(), 63);
        assert_eq!(parse_signal_number("40").unwrap(), 40);
        assert_eq!(parse_signal_number("IOT").unwrap(), libc::SIGABRT);
        assert_eq!(parse_signal_number("POLL").unwrap(), libc::SIGIO);
        assert_eq!(parse_signal_number("TERM").unwrap(), libc::SIGTERM);
        assert!(parse_signal_number("RTMIN+99").is_err());
        assert!(parse_signal_number("RTMAX--2147483648").is_err());
        assert!(parse_signal_number("65").is_err());
        assert!(parse_signal_number("NOPE").is_err());
    }

    #[test]
    fn names_numbers_and_prefixes_parse_alike() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}

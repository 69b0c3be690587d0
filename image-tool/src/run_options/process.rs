//! The process options: `--entrypoint`, the command after `--`, `-e`/`--env-file`, `-u`,
//! `-w`, `-t`, `--stop-signal` and `--stop-timeout`, merged as `docker run` merges them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;

/// The annotation the stop signal goes in (image-spec's name; `berth stop` reads it).
pub const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";
/// The annotation the grace period of `berth stop` goes in, in whole seconds.
pub const STOP_TIMEOUT_ANNOTATION: &str = "berth.stop-timeout";

#[derive(Args, Debug, Clone, Default)]
pub struct ProcessOptions {
    /// Run CMD instead of the image's ENTRYPOINT (the image's CMD is then not used);
    /// `--entrypoint ''` clears the entrypoint
    #[arg(long, value_name = "CMD", help_heading = "Process")]
    pub entrypoint: Option<String>,
    /// Set a variable: K=V, or K alone to pass berth-image's own value (unset: left out); repeatable
    #[arg(short = 'e', long = "env", value_name = "K[=V]", help_heading = "Process")]
    pub env: Vec<String>,
    /// Read variables from FILE: one K=V or K a line, `#` comments and blank lines skipped; repeatable
    #[arg(long = "env-file", value_name = "FILE", help_heading = "Process")]
    pub env_file: Vec<PathBuf>,
    /// Run as USER[:GROUP] (names or ids; names resolved in the image's /etc/passwd and /etc/group)
    #[arg(short = 'u', long, value_name = "USER[:GROUP]", help_heading = "Process")]
    pub user: Option<String>,
    /// Working directory inside the container (absolute; the runtime makes it when missing)
    #[arg(short = 'w', long = "workdir", value_name = "DIR", help_heading = "Process")]
    pub workdir: Option<String>,
    /// Give the process a terminal (and TERM=xterm unless set)
    #[arg(short = 't', long, help_heading = "Process")]
    pub tty: bool,
    /// Signal `berth stop` sends first (default: the image's StopSignal, else SIGTERM)
    #[arg(long = "stop-signal", value_name = "SIGNAL", value_parser = parse_signal, help_heading = "Process")]
    pub stop_signal: Option<String>,
    /// Seconds `berth stop` waits after the stop signal before SIGKILL (default 10; negative: for ever)
    #[arg(long = "stop-timeout", value_name = "SECS", allow_negative_numbers = true, help_heading = "Process")]
    pub stop_timeout: Option<i64>,
    /// The command (after `--`): replaces the image's CMD
    #[arg(last = true, value_name = "CMD ARGS")]
    pub command: Vec<String>,
}

impl ProcessOptions {
    /// Merges the options into the image config, as Docker merges a container's config
    /// into its image's: entrypoint and command, environment, user, working directory.
    pub fn merge_into(&self, image: &mut ImageConfiguration) -> Result<()> {
        let mut config = image.config().clone().unwrap_or_default();
        let image_cmd = config.cmd().clone().unwrap_or_default();
        let command = if self.command.is_empty() { None } else { Some(self.command.clone()) };
        match self.entrypoint.as_deref() {
            // Docker: an entrypoint given on the command line drops the image's CMD too.
            Some(entrypoint) if !entrypoint.is_empty() => {
                config.set_entrypoint(Some(vec![entrypoint.to_string()]));
                config.set_cmd(command);
            }
            Some(_) => {
                config.set_entrypoint(None);
                config.set_cmd(command.or(Some(image_cmd)));
            }
            None => {
                config.set_cmd(command.or(Some(image_cmd)));
            }
        }
        let mut env = config.env().clone().unwrap_or_default();
        for (key, value) in self.variables()? {
            let entry = format!("{key}={value}");
            match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
                Some(existing) => *existing = entry,
                None => env.push(entry),
            }
        }
        if self.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        config.set_env(Some(env));
        if let Some(user) = &self.user {
            if user.is_empty() || user.starts_with(':') {
                bail!("--user {user:?} names no user; give USER or USER:GROUP");
            }
            config.set_user(Some(user.clone()));
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                bail!("--workdir {dir:?} is not an absolute path; give the directory inside the container from /");
            }
            config.set_working_dir(Some(dir.clone()));
        }
        image.set_config(Some(config));
        Ok(())
    }

    /// Applies what lives in the runtime spec only: the terminal and the stop annotations.
    pub fn apply(&self, spec: &mut Spec) {
        if self.tty {
            let mut process = spec.process().clone().unwrap_or_default();
            process.set_terminal(Some(true));
            spec.set_process(Some(process));
        }
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        if let Some(signal) = &self.stop_signal {
            annotations.insert(STOP_SIGNAL_ANNOTATION.into(), signal.clone());
        }
        if let Some(seconds) = self.stop_timeout {
            annotations.insert(STOP_TIMEOUT_ANNOTATION.into(), seconds.to_string());
        }
        spec.set_annotations(Some(annotations));
    }

    /// The variables of `--env-file`s then `-e`s (later ones win), each a (key, value).
    fn variables(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for file in &self.env_file {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("cannot read --env-file {}", file.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let origin = format!("{} line {}", file.display(), n + 1);
                out.extend(variable(line, &origin)?);
            }
        }
        for item in &self.env {
            out.extend(variable(item, "-e")?);
        }
        Ok(out)
    }
}

/// One `K=V` or `K` (from berth-image's environment; None when unset there, as Docker).
fn variable(text: &str, origin: &str) -> Result<Option<(String, String)>> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (text, None),
    };
    if key.is_empty() {
        bail!("{origin}: {text:?} has no variable name before '='");
    }
    if key.chars().any(char::is_whitespace) {
        bail!("{origin}: variable name {key:?} contains whitespace");
    }
    Ok(match value {
        Some(value) => Some((key.to_string(), value)),
        None => std::env::var(key).ok().map(|value| (key.to_string(), value)),
    })
}

/// The signal names Linux has, without their SIG prefix.
const SIGNAL_NAMES: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
    "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH",
    "IO", "POLL", "PWR", "SYS",
];

/// A stop signal as Docker takes it: a name with or without SIG (any case), RTMIN+N, or a number.
pub fn parse_signal(text: &str) -> Result<String> {
    if let Ok(number) = text.parse::<u32>() {
        if (1..=64).contains(&number) {
            return Ok(number.to_string());
        }
        bail!("signal number {number} is out of range (1-64)");
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNAL_NAMES.contains(&bare) {
        return Ok(format!("SIG{bare}"));
    }
    // Real-time signals by offset, as systemd images name theirs (SIGRTMIN+3); glibc has 30.
    let offset = bare.strip_prefix("RTMIN+").or_else(|| bare.strip_prefix("RTMAX-"));
    if offset.and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n <= 30) {
        return Ok(format!("SIG{bare}"));
    }
    bail!("unknown signal {text:?}: give a name such as SIGTERM or TERM, or a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(config: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    fn merged(options: ProcessOptions, config: serde_json::Value) -> oci_spec::image::Config {
        let mut image = image(config);
        options.merge_into(&mut image).unwrap();
        image.config().clone().unwrap()
    }

    #[test]
    fn entrypoint_and_command_merge_as_docker() {
        let base = serde_json::json!({"Entrypoint": ["/ep"], "Cmd": ["a"]});
        let cmd = |o: ProcessOptions| {
            let c = merged(o, base.clone());
            (c.entrypoint().clone().unwrap_or_default(), c.cmd().clone().unwrap_or_default())
        };
        let command = vec!["x".to_string(), "y".to_string()];
        assert_eq!(cmd(ProcessOptions::default()), (vec!["/ep".into()], vec!["a".into()]));
        let o = ProcessOptions { command: command.clone(), ..Default::default() };
        assert_eq!(cmd(o), (vec!["/ep".into()], command.clone()));
        let o = ProcessOptions { entrypoint: Some("/other".into()), ..Default::default() };
        assert_eq!(cmd(o), (vec!["/other".into()], vec![]));
        let o = ProcessOptions { entrypoint: Some(String::new()), ..Default::default() };
        assert_eq!(cmd(o), (vec![], vec!["a".into()]));
        let o = ProcessOptions { entrypoint: Some(String::new()), command: command.clone(), ..Default::default() };
        assert_eq!(cmd(o), (vec![], command));
    }

    #[test]
    fn env_files_then_flags_override_the_image() {
        let dir = std::env::temp_dir().join(format!("berth-image-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("env");
        std::fs::write(&file, "# comment\n\nA=file\n  B=two words \nPATH\n").unwrap();
        let o = ProcessOptions {
            env_file: vec![file],
            env: vec!["A=flag".into(), "C=".into(), "BERTH_SURELY_UNSET_VARIABLE".into()],
            tty: true,
            ..Default::default()
        };
        let env = merged(o, serde_json::json!({"Env": ["A=image", "Z=1"], "Cmd": ["sh"]})).env().clone().unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(env, ["A=flag", "Z=1", "B=two words ", &format!("PATH={path}"), "C=", "TERM=xterm"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_input_is_refused() {
        let bad = |o: ProcessOptions| o.merge_into(&mut image(serde_json::json!({"Cmd": ["sh"]}))).unwrap_err();
        assert!(bad(ProcessOptions { env: vec!["=v".into()], ..Default::default() })
            .to_string()
            .contains("no variable name"));
        assert!(bad(ProcessOptions { env: vec!["A B=v".into()], ..Default::default() })
            .to_string()
            .contains("whitespace"));
        assert!(bad(ProcessOptions { workdir: Some("rel".into()), ..Default::default() })
            .to_string()
            .contains("absolute"));
        assert!(bad(ProcessOptions { user: Some(":5".into()), ..Default::default() }).to_string().contains("no user"));
    }

    #[test]
    fn signals_parse_as_docker_takes_them() {
        assert_eq!(parse_signal("term").unwrap(), "SIGTERM");
        assert_eq!(parse_signal("SIGUSR1").unwrap(), "SIGUSR1");
        assert_eq!(parse_signal("9").unwrap(), "9");
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}

//! Where an option's value comes from: the flag if given, else its `TAGGER_*` environment
//! variable (what containers and systemd units set), else the default. A value that does not
//! parse is a usage error naming the variable.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use super::CliError;

/// Resolves an option: the flag if given, else `TAGGER_<env>`, else `default`.
pub fn setting<T: FromStr>(flag: Option<T>, env: &str, default: T) -> Result<T, CliError>
where
    T::Err: std::fmt::Display,
{
    Ok(optional_setting(flag, env)?.unwrap_or(default))
}

/// Like [`setting`] without a default.
pub fn optional_setting<T: FromStr>(flag: Option<T>, env: &str) -> Result<Option<T>, CliError>
where
    T::Err: std::fmt::Display,
{
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var(env) {
        Ok(value) if !value.is_empty() => value
            .parse()
            .map(Some)
            .map_err(|e| CliError::Usage(format!("environment variable {env}={value:?}: {e}"))),
        _ => Ok(None),
    }
}

/// A switch: the flag if set, else `TAGGER_<env>` as 1/0, true/false, yes/no or on/off.
pub fn switch(flag: bool, env: &str) -> Result<bool, CliError> {
    Ok(flag || optional_setting(None::<Switch>, env)?.is_some_and(|s| s.0))
}

/// A switch variable's values.
#[derive(Debug, Clone, Copy)]
struct Switch(bool);

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Switch(true)),
            "0" | "false" | "no" | "off" => Ok(Switch(false)),
            _ => Err("expected 1/0, true/false, yes/no or on/off".into()),
        }
    }
}

/// `HOST:PORT` (a name is resolved) as given to `--{flag}`.
pub fn socket_addr(flag: &str, text: &str) -> Result<SocketAddr, CliError> {
    let usage = |why: String| CliError::Usage(format!("--{flag} {text:?}: {why}"));
    text.to_socket_addrs()
        .map_err(|e| usage(format!("{e} (expected HOST:PORT, e.g. 0.0.0.0:8080)")))?
        .next()
        .ok_or_else(|| usage("resolves to no address".into()))
}

/// A count that must be at least 1.
pub fn at_least_one<T: PartialOrd + From<u8>>(value: T, flag: &str) -> Result<T, CliError> {
    if value < T::from(1) {
        Err(CliError::Usage(format!("--{flag} must be at least 1")))
    } else {
        Ok(value)
    }
}

/// The number of cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_parse() {
        assert!("TRUE".parse::<Switch>().unwrap().0);
        assert!(!"0".parse::<Switch>().unwrap().0);
        assert!("maybe".parse::<Switch>().is_err());
    }

    #[test]
    fn addresses_and_counts() {
        assert_eq!(
            socket_addr("addr", "127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(matches!(
            socket_addr("addr", "nonsense"),
            Err(CliError::Usage(_))
        ));
        assert_eq!(at_least_one(3usize, "jobs").unwrap(), 3);
        assert!(matches!(
            at_least_one(0u64, "jobs"),
            Err(CliError::Usage(_))
        ));
    }
}

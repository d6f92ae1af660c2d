//! Configuration: flags > `KDC_*` environment > `kdc.toml` > defaults.
//!
//! Flags and environment are resolved by clap (see [`crate::cli`]); this
//! module reads the file layer and fills in what those left open.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::cors::AllowedOrigins;
use crate::policy::Policy;
use crate::throttle::ThrottlePolicy;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./kdc-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8088";
/// Default realm for a new data directory.
pub const DEFAULT_REALM: &str = "EXAMPLE.TEST";
/// Default time open requests get to finish at shutdown, seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// The configuration file read from the working directory when no
/// `--config` is given.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "kdc.toml";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The default: pretty when standard error is a terminal (a person
    /// reads it), JSON otherwise (a collector does).
    pub fn for_stderr() -> Self {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() { Self::Pretty } else { Self::Json }
    }
}

/// The contents of `kdc.toml`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data: Option<PathBuf>,
    /// The PostgreSQL principal store (`postgres://…`) instead of the data
    /// directory's SQLite file. Defaults to none (SQLite).
    pub database_url: Option<crate::store::DatabaseUrl>,
    /// Listen address.
    pub listen: Option<String>,
    /// Realm for a new data directory.
    pub realm: Option<String>,
    /// Log format (defaults to [`LogFormat::for_stderr`]).
    pub log_format: Option<LogFormat>,
    /// Audit trail: a file appended to, or `-` for standard output. Defaults
    /// to none.
    pub audit_log: Option<PathBuf>,
    /// When the audit trail is synced to disk. Defaults to `interval`.
    pub audit_fsync: Option<crate::audit::FsyncPolicy>,
    /// The base URL clients reach this KDC at (see [`advertised_base_url`]).
    pub public_url: Option<String>,
    /// PEM certificate chain to serve https with.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Time open requests get to finish at shutdown, seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// The Redis shared by every KDC instance for the replay cache and the
    /// throttle (`--replay-cache-url`).
    pub replay_cache_url: Option<String>,
    /// Ticket policy (`[policy]` table).
    #[serde(default)]
    pub policy: Policy,
    /// Pre-auth throttling and trusted proxies (`[throttle]` table).
    #[serde(default)]
    pub throttle: ThrottlePolicy,
    /// Browser access (`[cors]` table).
    #[serde(default)]
    pub cors: CorsConfig,
}

/// The `[cors]` table of `kdc.toml`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) whose pages may call the KDC; empty
    /// (the default): no CORS. See [`crate::cors`].
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl FileConfig {
    /// Reads `explicit` if given (it must exist), else `./kdc.toml` if present,
    /// else the defaults.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !p.exists() {
                    return Ok(Self::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses the text of a configuration file and checks its bounds.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.throttle.validate()?;
        AllowedOrigins::parse(&config.cors.allowed_origins)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file_and_refuses_unknown_keys() {
        let c: FileConfig = toml::from_str(
            "data = \"/var/lib/kdc\"\nlisten = \"0.0.0.0:80\"\nlog_format = \"json\"\naudit_log = \"/var/log/kdc/audit.log\"\n\
             audit_fsync = \"always\"\n[policy]\nmax_life_secs = 3600\n",
        )
        .unwrap();
        assert_eq!(c.audit_log.as_deref(), Some(Path::new("/var/log/kdc/audit.log")));
        assert_eq!(c.audit_fsync, Some(crate::audit::FsyncPolicy::Always));
        assert_eq!(c.listen.as_deref(), Some("0.0.0.0:80"));
        assert_eq!(c.policy.max_life_secs, 3600);
        assert_eq!(c.policy.max_skew_secs, 300);
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn parses_the_throttle_table_and_refuses_values_out_of_bounds() {
        let c = FileConfig::parse(
            "[throttle]\nper_principal_address = 3\nmax_delay_ms = 1500\ntrusted_proxies = [\"10.0.0.1\", \"::1\"]\n",
        )
        .unwrap();
        assert_eq!(c.throttle.per_principal_address, 3);
        assert_eq!(c.throttle.max_delay_ms, 1500);
        assert_eq!(c.throttle.per_address, 50, "unset fields keep their defaults");
        assert_eq!(
            c.throttle.trusted_proxies,
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert!(FileConfig::parse("[throttle]\nmax_delay_ms = 60000\n").is_err());
        assert!(FileConfig::parse("[throttle]\nper_principal = 0\n").is_err());
        assert!(FileConfig::parse("[throttle]\ntrusted_proxies = [\"10.0.0.0/8\"]\n").is_err());
        assert!(FileConfig::parse("[throttle]\nlockout_secs = 1\n").is_err());
    }

    #[test]
    fn parses_the_cors_table_and_refuses_a_wildcard() {
        let c =
            FileConfig::parse("[cors]\nallowed_origins = [\"https://app.example.test\", \"http://127.0.0.1:5173\"]\n")
                .unwrap();
        assert_eq!(c.cors.allowed_origins, ["https://app.example.test", "http://127.0.0.1:5173"]);
        assert!(FileConfig::parse("").unwrap().cors.allowed_origins.is_empty(), "off by default");
        let star = FileConfig::parse("[cors]\nallowed_origins = [\"*\"]\n").unwrap_err();
        assert!(format!("{star:#}").contains("`*` is refused"), "{star:#}");
        assert!(FileConfig::parse("[cors]\nallowed_origins = [\"https://app.example.test/app\"]\n").is_err());
        assert!(FileConfig::parse("[cors]\nallow_credentials = true\n").is_err());
    }
}

/// Why a public URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("public URL {url:?}: {reason}")]
pub(crate) struct InvalidPublicUrl {
    /// What was given.
    pub url: String,
    /// Why not.
    pub reason: &'static str,
}

/// Checks a configured public base URL and returns it without a trailing
/// `/`: `http` or `https`, a host, an optional port and path prefix, nothing
/// else (no user info, query or fragment).
pub(crate) fn parse_public_url(url: &str) -> Result<String, InvalidPublicUrl> {
    let bad = |reason| InvalidPublicUrl { url: url.to_owned(), reason };
    let uri: axum::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad("a host (and port) only, no user info"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("no query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The scheme the KDC serves: `https` with a certificate, else `http`.
pub(crate) fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// The base URL the KDC advertises (discovery's issuer, endpoints and
/// `jwks_uri`): the configured public URL, or else the scheme it serves
/// (`tls`) and the address it listens on, which is only allowed for a
/// loopback address. A request's `Host` header never enters it: a KDC
/// behind anything else must be told its public URL.
pub fn advertised_base_url(
    configured: Option<&str>,
    listening: std::net::SocketAddr,
    tls: bool,
) -> anyhow::Result<String> {
    match configured {
        Some(url) if tls && url.starts_with("http://") => anyhow::bail!(
            "public URL {url:?} is plain http, but this KDC serves https: clients would be sent to plain http. \
             Give the https:// URL clients reach it at"
        ),
        Some(url) => Ok(parse_public_url(url)?),
        None if listening.ip().is_loopback() => Ok(format!("{}://{listening}", scheme(tls))),
        None => anyhow::bail!(
            "listening on {listening}, which is not a loopback address, without a public URL: set --public-url \
             (KDC_PUBLIC_URL, or public_url in kdc.toml) to the URL clients reach this KDC at"
        ),
    }
}

#[cfg(test)]
mod public_url_tests {
    use super::*;

    #[test]
    fn public_urls() {
        assert_eq!(parse_public_url("https://kdc.example.test/").unwrap(), "https://kdc.example.test");
        assert_eq!(
            parse_public_url("https://kdc.example.test:8443/auth").unwrap(),
            "https://kdc.example.test:8443/auth"
        );
        for bad in
            ["kdc.example.test", "ftp://kdc", "https://u:p@kdc", "https://kdc/?x=1", "https://kdc/#f", "https://"]
        {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_a_public_url_only_loopback_is_advertised() {
        let lo: std::net::SocketAddr = "127.0.0.1:8088".parse().unwrap();
        assert_eq!(advertised_base_url(None, lo, false).unwrap(), "http://127.0.0.1:8088");
        let v6: std::net::SocketAddr = "[::1]:8088".parse().unwrap();
        assert_eq!(advertised_base_url(None, v6, false).unwrap(), "http://[::1]:8088");
        for any in ["0.0.0.0:8088", "10.1.2.3:8088", "[::]:8088"] {
            assert!(advertised_base_url(None, any.parse().unwrap(), true).is_err(), "{any}");
        }
        let any: std::net::SocketAddr = "0.0.0.0:8088".parse().unwrap();
        assert_eq!(
            advertised_base_url(Some("https://kdc.example.test"), any, false).unwrap(),
            "https://kdc.example.test"
        );
        assert_eq!(advertised_base_url(None, lo, true).unwrap(), "https://127.0.0.1:8088");
        // Serving TLS while advertising plain http would send clients to http.
        assert!(advertised_base_url(Some("http://kdc.example.test"), any, true).is_err());
        assert!(advertised_base_url(Some("http://kdc.example.test"), any, false).is_ok());
    }
}

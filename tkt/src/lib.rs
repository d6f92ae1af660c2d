//! The `tkt` command: log in to a KDC, list and get tickets, call services, log out —
//! kinit/klist/kdestroy for the HTTP ticket authority.
//!
//! Exit codes: 0 success; 1 other error; 2 usage; 3 not logged in or login
//! failed; 4 refused by the service or mutual authentication failed; 5 KDC or
//! network unreachable; 7 the service answered (verified) with an HTTP error
//! status.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use client_sdk::{ClientOptions, FileCache, KdcClient, SdkError, ServiceRequest, TicketCache};
use kdc_proto::{Clock, SystemClock};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(name = "tkt", version, about = "Tickets for the HTTP ticket authority")]
struct Cli {
    /// The KDC's base URL [default: the KDC of the last login].
    #[arg(long, global = true, env = "TKT_KDC_URL")]
    kdc: Option<String>,
    /// The ticket cache file [default: $XDG_CACHE_HOME/tkt/tickets.json, else ~/.cache/tkt/tickets.json].
    #[arg(long, global = true, env = "TKT_CACHE")]
    cache: Option<PathBuf>,
    /// Allow plain http:// to hosts other than loopback (unsafe).
    #[arg(long, global = true)]
    insecure_http: bool,
    /// A PEM file of certificate authorities to trust besides the
    /// platform's roots (a private CA), for the KDC and services.
    #[arg(long, global = true, env = "TKT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in (password from a prompt, or one line of stdin with
    /// --password-stdin; a service: its keytab, with --keytab FILE).
    Login {
        /// Principal (a bare name gets the KDC's realm).
        principal: String,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "keytab")]
        password_stdin: bool,
        /// Log in as a service with the current key of its keytab (as
        /// `kdc keytab export` writes it), like `kinit -k -t FILE`.
        #[arg(long, value_name = "FILE")]
        keytab: Option<PathBuf>,
    },
    /// List cached tickets.
    List,
    /// Get (and cache) a ticket for a service.
    Get {
        /// Service principal.
        service: String,
    },
    /// Forget every ticket and session key.
    Logout,
    /// Call a service: prints the body once the mutual reply verified.
    Request(RequestArgs),
    /// Print a ready Authorization value for one such request (for curl).
    Header(RequestArgs),
}

#[derive(Debug, clap::Args)]
struct RequestArgs {
    /// HTTP method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    method: String,
    /// Request body (bound into the authenticator).
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// A request header for `request`, `NAME: VALUE` (repeatable), e.g.
    /// `-H 'Content-Type: application/json'`; a body goes as
    /// application/octet-stream unless a Content-Type is given. Headers are
    /// not bound into the authenticator (`header` prints Authorization only).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Service principal.
    #[arg(long)]
    service: String,
    /// URL.
    url: String,
}

struct Failure {
    code: u8,
    message: String,
}

impl From<SdkError> for Failure {
    fn from(e: SdkError) -> Self {
        let code = match &e {
            SdkError::LoginFailed
            | SdkError::KeytabLoginFailed { .. }
            | SdkError::NotLoggedIn
            | SdkError::Throttled { .. } => 3,
            SdkError::Refused { .. } | SdkError::MutualAuthFailed => 4,
            SdkError::Http(_) | SdkError::Tls { .. } => 5,
            _ => 1,
        };
        Self { code, message: e.to_string() }
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

fn relative(secs: i64) -> String {
    let (sign, s) = if secs < 0 { ("expired ", -secs) } else { ("in ", secs) };
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let text = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", s % 60)
    };
    if secs < 0 { format!("{sign}{text} ago") } else { format!("{sign}{text}") }
}

async fn client(cli: &Cli, cache: Arc<FileCache>) -> Result<KdcClient, Failure> {
    let kdc = match &cli.kdc {
        Some(k) => k.clone(),
        None => cache.snapshot()?.kdc.ok_or_else(|| fail(1, "no KDC: set TKT_KDC_URL or pass --kdc URL"))?,
    };
    let ca_certificates = match &cli.ca_cert {
        Some(path) => client_sdk::load_ca_file(path)?,
        None => Vec::new(),
    };
    let options =
        ClientOptions::default().cache(cache).allow_insecure_http(cli.insecure_http).ca_certificates(ca_certificates);
    KdcClient::discover(&kdc, options).await.map_err(|e| match e {
        SdkError::Http(_) => fail(5, format!("cannot reach the KDC at {kdc}")),
        e => e.into(),
    })
}

fn read_password(principal: &str, from_stdin: bool) -> Result<Zeroizing<String>, Failure> {
    let pw = if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).map_err(|e| fail(1, format!("reading the password: {e}")))?;
        Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        Zeroizing::new(
            rpassword::prompt_password(format!("Password for {principal}: "))
                .map_err(|e| fail(1, format!("reading the password: {e}")))?,
        )
    };
    if pw.is_empty() {
        return Err(fail(1, "empty password"));
    }
    Ok(pw)
}

/// A `-H` argument: `NAME: VALUE`, as curl takes it.
fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), Failure> {
    let bad = || fail(2, format!("invalid header {h:?}: expected NAME: VALUE"));
    let (name, value) = h.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let cache = Arc::new(FileCache::new(cli.cache.clone().unwrap_or_else(FileCache::default_path))?);
    match &cli.command {
        Command::Login { principal, password_stdin, keytab } => {
            let kdc = client(&cli, cache).await?;
            let who = kdc.principal_name(principal)?;
            match keytab {
                Some(path) => {
                    let kt = client_sdk::load_keytab(path)?;
                    if kt.principal != who {
                        return Err(fail(
                            1,
                            format!("{} holds the keys of {}, not of {who}", path.display(), kt.principal),
                        ));
                    }
                    kdc.login_with_keytab(&kt).await?;
                }
                None => {
                    let pw = read_password(&who.to_string(), *password_stdin)?;
                    kdc.login(&who, &pw).await?;
                }
            }
            println!("logged in as {who}");
        }
        Command::List => {
            let c = cache.snapshot()?;
            let who = c.principal.ok_or(SdkError::NotLoggedIn)?;
            let now = SystemClock.now().as_secs() as i64;
            println!("principal: {who}");
            if let Some(k) = &c.kdc {
                println!("kdc:       {k}");
            }
            for t in c.tgt.iter().chain(c.tickets.values()) {
                let renew = t
                    .part
                    .renew_till
                    .map(|r| format!(", renewable until {}", relative(r as i64 - now)))
                    .unwrap_or_default();
                println!("{}\texpires {}{renew}", t.service(), relative(t.part.end_time as i64 - now));
            }
        }
        Command::Get { service } => {
            let kdc = client(&cli, cache).await?;
            let svc = kdc.principal_name(service)?;
            let t = kdc.service_ticket(&svc).await?;
            let now = SystemClock.now().as_secs() as i64;
            println!("{}\texpires {}", t.service(), relative(t.part.end_time as i64 - now));
        }
        Command::Logout => {
            cache.destroy()?;
            println!("logged out; ticket cache removed");
        }
        Command::Request(a) | Command::Header(a) => {
            let kdc = client(&cli, cache).await?;
            let svc = kdc.principal_name(&a.service)?;
            let method = Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| fail(2, format!("invalid method {}", a.method)))?;
            let body = a.data.as_ref().map(|d| d.as_bytes().to_vec());
            if matches!(cli.command, Command::Header(_)) {
                let p = kdc.prepare(&svc, &method, &a.url, body.as_deref()).await?;
                println!("{}", p.authorization);
                return Ok(());
            }
            let mut request = ServiceRequest::new(method, &a.url);
            for h in &a.headers {
                let (name, value) = parse_header(h)?;
                request = request.header(name, value);
            }
            if let Some(b) = body {
                request = request.body(b);
            }
            let resp = kdc.send_request(&svc, request).await?;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&resp.body);
            if !resp.body.ends_with(b"\n") && !resp.body.is_empty() {
                let _ = out.write_all(b"\n");
            }
            if !resp.status.is_success() {
                return Err(fail(7, format!("the service answered {}", resp.status)));
            }
        }
    }
    Ok(())
}

/// Entry point of the `tkt` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tkt: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tkt: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

//! `kdc admin`: the admin API (`/admin/principals…`) from the command line,
//! like `kadmin` against a remote KDC, through the client SDK.
//!
//! It authenticates with an administrator's ticket for `kadmin/admin@REALM`:
//! from an existing `tkt login` (the same ticket cache, `TKT_CACHE` or
//! [`FileCache::default_path`]), or from a password login of its own
//! (asked for on the terminal, or `--admin-password-stdin`) whose tickets
//! stay in memory and never touch that cache. Passwords travel sealed under
//! the admin ticket's session key (`password_sealed`), keytabs come back
//! sealed (`keytab_sealed`) and are written mode 0600.
//!
//! The commands and their output are those of the local `kdc principal` and
//! `kdc keytab` (the same argument definitions), so a script can move from
//! one to the other by adding `admin --kdc URL` and dropping `--data`. One is
//! remote only: `principal unlock`, as the failed-pre-authentication
//! throttle lives in the serving KDC (or its Redis), not in the data
//! directory.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use client_sdk::{ClientOptions, FileCache, KdcClient, MemoryCache, SdkError, ServiceRequest, TicketCache};
use kdc_proto::Keytab;
use kdc_proto::{Clock as _, Principal, SystemClock};
use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::admin::{PrincipalPage, PrincipalView, Rotated, SealedKeytab};
use crate::cli::{KeytabCommand, PrincipalCommand};

/// `kdc admin`: administer a KDC over HTTP.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tkt login admin && kdc admin --kdc https://kdc.example.test principal list\n  \
    printf '%s\\n' \"$NEW_PASSWORD\" | kdc admin principal add carol --password-stdin --role reader\n  \
    kdc admin keytab export HTTP/hello.example.test --out hello.keytab")]
pub(crate) struct AdminArgs {
    /// The KDC's base URL [default: the KDC of the ticket cache's login].
    #[arg(long, env = "TKT_KDC_URL", value_name = "URL")]
    kdc: Option<String>,
    /// The ticket cache of a `tkt login` as an administrator [default:
    /// $XDG_CACHE_HOME/tkt/tickets.json, else ~/.cache/tkt/tickets.json].
    #[arg(long, env = "TKT_CACHE", value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Log in as this administrator with a password (asked for, or
    /// --admin-password-stdin) instead of using the ticket cache's login.
    #[arg(long = "as", value_name = "PRINCIPAL")]
    login_as: Option<String>,
    /// Read the administrator's password from the first line of standard
    /// input (a new user's password, with --password-stdin, is the second)
    /// and log in with it; its tickets are kept in memory only.
    #[arg(long)]
    admin_password_stdin: bool,
    /// A PEM file of certificate authorities to trust for the KDC (a private CA).
    #[arg(long, env = "TKT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Allow plain http:// to a KDC that is not on loopback (unsafe).
    #[arg(long)]
    insecure_http: bool,
    /// What to do.
    #[command(subcommand)]
    command: AdminCommand,
}

/// The remote commands: the local ones, less `--data`.
#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Manage principals.
    #[command(subcommand)]
    Principal(AdminPrincipalCommand),
    /// Export service keys.
    #[command(subcommand)]
    Keytab(KeytabCommand),
}

/// `kdc admin principal …`: the local commands, and the remote-only ones.
#[derive(Debug, Subcommand)]
enum AdminPrincipalCommand {
    #[command(flatten)]
    Local(PrincipalCommand),
    /// Lift a principal's failed-pre-authentication lock-out: no address is
    /// refused for it and it is no longer slowed, at every KDC sharing the
    /// throttle. Addresses refused for spraying many names stay refused.
    Unlock {
        /// Principal name.
        name: String,
    },
}

/// The administrator whose password logs in when nothing else says.
const DEFAULT_ADMIN: &str = crate::kdc::BOOTSTRAP_ADMIN;

/// How a person gets an administrator's ticket.
const HOW_TO_LOG_IN: &str =
    "log in as an administrator first (`tkt login admin`, with the same TKT_CACHE), or pass --admin-password-stdin";

/// Runs `kdc admin …`.
pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args).await?;
    match args.command {
        AdminCommand::Principal(AdminPrincipalCommand::Local(cmd)) => admin.principal(cmd).await,
        AdminCommand::Principal(AdminPrincipalCommand::Unlock { name }) => admin.unlock(&name).await,
        AdminCommand::Keytab(KeytabCommand::Export { name, out }) => admin.export_keytab(&name, &out).await,
    }
}

/// A session with a KDC's admin API.
struct Admin {
    client: KdcClient,
    kadmin: Principal,
    /// `…/admin/principals`.
    principals: String,
}

/// A path segment of `name`: every byte but the unreserved ones
/// percent-encoded (`HTTP/host@R` → `HTTP%2Fhost%40R`).
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line of standard input, for a password.
fn stdin_line(what: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line).with_context(|| format!("reading the {what} from standard input"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    if trimmed.is_empty() {
        bail!("no {what} on standard input");
    }
    Ok(trimmed)
}

/// An SDK error as a person should read it here; `who` is the principal
/// logged in, when known.
fn sdk_error(e: SdkError, kdc: &str, who: Option<Principal>) -> anyhow::Error {
    match e {
        SdkError::NotLoggedIn => anyhow::anyhow!("not logged in (or the login expired): {HOW_TO_LOG_IN}"),
        SdkError::Refused { kind: kdc_proto::ProblemKind::InsufficientRole, .. }
        | SdkError::Refused { status: 403, .. } => not_an_admin(who),
        SdkError::Refused { kind, .. } => {
            anyhow::anyhow!("the KDC refused the administrator's ticket ({}): {HOW_TO_LOG_IN}", kind.slug())
        }
        SdkError::Http(e) => {
            // reqwest's own text names the URL; the cause is at the end of
            // the chain (`Connection refused`, a timeout, a DNS failure).
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            anyhow::anyhow!("cannot reach the KDC at {kdc}: {cause}")
        }
        e => anyhow::Error::new(e),
    }
}

fn not_an_admin(who: Option<Principal>) -> anyhow::Error {
    let who = who.map_or_else(|| "the principal logged in".to_owned(), |w| w.to_string());
    anyhow::anyhow!("not an administrator: {who} does not hold the admin role; {HOW_TO_LOG_IN}")
}

impl Admin {
    /// Discovers the KDC and makes sure there is an administrator's login:
    /// the ticket cache's, or a password login kept in memory.
    async fn connect(args: &AdminArgs) -> anyhow::Result<Self> {
        let cache_path = args.cache.clone().unwrap_or_else(FileCache::default_path);
        // A cache that is not there holds no login: nothing is created for it.
        let file_cache = if cache_path.exists() { Some(Arc::new(FileCache::new(&cache_path)?)) } else { None };
        let cached = match &file_cache {
            Some(c) => c.snapshot()?,
            None => Default::default(),
        };
        let kdc = args
            .kdc
            .clone()
            .or_else(|| cached.kdc.clone())
            .context("no KDC: pass --kdc URL (or set TKT_KDC_URL)")?
            .trim_end_matches('/')
            .to_owned();
        let now = SystemClock.now().as_secs();
        let logged_in = cached.principal.is_some()
            && cached.tgt.as_ref().is_some_and(|t| t.valid_at(now))
            && cached.kdc.as_deref().map(|k| k.trim_end_matches('/')) == Some(kdc.as_str());
        let password_login = args.admin_password_stdin || args.login_as.is_some() || !logged_in;
        if password_login && !args.admin_password_stdin && !std::io::stdin().is_terminal() {
            bail!(
                "not logged in to {kdc} (no valid login in {}), and no terminal to ask for a password: {HOW_TO_LOG_IN}",
                cache_path.display()
            );
        }
        let cache: Arc<dyn TicketCache> = match (password_login, file_cache) {
            (false, Some(c)) => c,
            _ => Arc::new(MemoryCache::default()),
        };
        let ca_certificates = match &args.ca_cert {
            Some(path) => client_sdk::load_ca_file(path)?,
            None => Vec::new(),
        };
        let options = ClientOptions::default()
            .cache(cache)
            .allow_insecure_http(args.insecure_http)
            .ca_certificates(ca_certificates);
        let client = KdcClient::discover(&kdc, options).await.map_err(|e| sdk_error(e, &kdc, None))?;
        if password_login {
            let who = client.principal_name(args.login_as.as_deref().unwrap_or(DEFAULT_ADMIN))?;
            let password = if args.admin_password_stdin {
                stdin_line("administrator's password")?
            } else {
                Zeroizing::new(
                    rpassword::prompt_password(format!("Password for {who}: "))
                        .context("reading the password from the terminal")?,
                )
            };
            client.login(&who, &password).await.map_err(|e| match e {
                SdkError::LoginFailed => anyhow::anyhow!("login as {who} failed: wrong name or password"),
                e => sdk_error(e, &kdc, None),
            })?;
        }
        let kadmin = Principal::admin_service(client.realm());
        Ok(Self { client, kadmin, principals: format!("{kdc}/admin/principals") })
    }

    fn error(&self, e: SdkError) -> anyhow::Error {
        sdk_error(e, self.principals.trim_end_matches("/admin/principals"), self.client.principal().ok())
    }

    /// Sends `request` to the admin API; a refusal becomes an error that
    /// says what to do (`what` names the principal it was about).
    async fn send(&self, request: ServiceRequest, what: Option<&str>) -> anyhow::Result<client_sdk::ServiceResponse> {
        let resp = self.client.send_request(&self.kadmin, request).await.map_err(|e| self.error(e))?;
        if resp.status.is_success() {
            return Ok(resp);
        }
        let problem: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let field = |name: &str| problem.get(name).and_then(Value::as_str).unwrap_or("");
        let kind = field("type").rsplit(':').next().unwrap_or("");
        let detail = field("detail");
        let name = what.unwrap_or("");
        Err(match (resp.status.as_u16(), kind) {
            (403, _) => not_an_admin(self.client.principal().ok()),
            (404, "principal-not-found") => anyhow::anyhow!("no such principal: {name}"),
            (404, _) => anyhow::anyhow!("this KDC has no such admin endpoint ({})", resp.status),
            (409, "principal-exists") => anyhow::anyhow!("{name} already exists"),
            (_, "") => anyhow::anyhow!("the KDC answered {}", resp.status),
            (_, kind) if detail.is_empty() => anyhow::anyhow!("the KDC refused: {kind}"),
            // The KDC's own words (`password refused: …`, `no such principal`).
            (_, kind) => anyhow::anyhow!("the KDC refused ({kind}): {detail}"),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: ServiceRequest,
        what: Option<&str>,
    ) -> anyhow::Result<T> {
        let resp = self.send(request, what).await?;
        serde_json::from_slice(&resp.body).context("the KDC's answer is not what the admin API documents")
    }

    fn url(&self, name: &str, rest: &str) -> String {
        format!("{}/{}{rest}", self.principals, segment(name))
    }

    async fn show(&self, name: &str) -> anyhow::Result<PrincipalView> {
        self.json(ServiceRequest::new(Method::GET, self.url(name, "")), Some(name)).await
    }

    async fn principal(&self, cmd: PrincipalCommand) -> anyhow::Result<()> {
        match cmd {
            PrincipalCommand::Add(a) => {
                let name = self.client.principal_name(&a.name)?;
                let password_sealed = if a.service {
                    None
                } else {
                    let password = crate::cli::new_password(&name, a.password_stdin, true)?;
                    Some(self.seal(password).await?)
                };
                let body = json!({
                    "name": name.to_string(),
                    "kind": if a.service { "service" } else { "user" },
                    "password_sealed": password_sealed,
                    "roles": a.roles,
                    "max_life_secs": a.max_life,
                    "max_renew_secs": a.max_renew,
                });
                let request = ServiceRequest::new(Method::POST, &self.principals).json(&body)?;
                let view: PrincipalView = self.json(request, Some(&name.to_string())).await?;
                println!("created {} ({}, kvno 1)", view.name, view.kind);
            }
            PrincipalCommand::List => {
                let mut after: Option<String> = None;
                loop {
                    let mut url = format!("{}?limit={}", self.principals, crate::admin::MAX_PAGE);
                    if let Some(a) = &after {
                        url.push_str(&format!("&after={}", segment(a)));
                    }
                    let page: PrincipalPage = self.json(ServiceRequest::new(Method::GET, url), None).await?;
                    for r in &page.principals {
                        let status = if r.disabled { "disabled" } else { "enabled" };
                        println!("{}\t{}\t{status}\t{}", r.name, r.kind, r.roles.join(","));
                    }
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
            PrincipalCommand::Show { name } => {
                let r = self.show(&name).await?;
                println!("name:       {}", r.name);
                println!("id:         {}", r.id);
                println!("kind:       {}", r.kind);
                println!("status:     {}", if r.disabled { "disabled" } else { "enabled" });
                println!("roles:      {}", r.roles.join(", "));
                println!("max life:   {}", r.max_life_secs.map_or("realm default".into(), |s| format!("{s} s")));
                println!("max renew:  {}", r.max_renew_secs.map_or("realm default".into(), |s| format!("{s} s")));
                for (i, k) in r.kvnos.iter().enumerate() {
                    println!("key:        kvno {k}{}", if i == 0 { " (current)" } else { "" });
                }
            }
            PrincipalCommand::Disable { name } => self.set_disabled(&name, true).await?,
            PrincipalCommand::Enable { name } => self.set_disabled(&name, false).await?,
            PrincipalCommand::Delete { name } => {
                self.send(ServiceRequest::new(Method::DELETE, self.url(&name, "")), Some(&name)).await?;
                println!("deleted {}", self.client.principal_name(&name)?);
            }
            PrincipalCommand::Rotate { name, password_stdin } => {
                let view = self.show(&name).await?;
                let full = self.client.principal_name(&view.name)?;
                let body = match (view.kind.as_str(), password_stdin) {
                    ("user", from_stdin) => {
                        let password = crate::cli::new_password(&full, from_stdin, false)?;
                        json!({ "password_sealed": self.seal(password).await? })
                    }
                    (_, true) => bail!("{full} is a service: its keys are random, never passwords"),
                    (_, false) => json!({}),
                };
                let request = ServiceRequest::new(Method::POST, self.url(&name, "/rotate")).json(&body)?;
                let r: Rotated = self.json(request, Some(&name)).await?;
                println!(
                    "rotated {full}: new kvno {}; previous versions keep working for the KDC's grace period",
                    r.kvno
                );
            }
        }
        Ok(())
    }

    /// `password` sealed for the admin service, to send at once (it opens
    /// only under the session key of the ticket the next request uses).
    async fn seal(&self, password: Zeroizing<String>) -> anyhow::Result<String> {
        self.client.seal_for(&self.kadmin, password.as_bytes()).await.map_err(|e| self.error(e))
    }

    async fn unlock(&self, name: &str) -> anyhow::Result<()> {
        self.send(ServiceRequest::new(Method::POST, self.url(name, "/unlock")), Some(name)).await?;
        println!("unlocked {}", self.client.principal_name(name)?);
        Ok(())
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> anyhow::Result<()> {
        let request = ServiceRequest::new(Method::PATCH, self.url(name, "")).json(&json!({ "disabled": disabled }))?;
        let view: PrincipalView = self.json(request, Some(name)).await?;
        println!("{} {}", if disabled { "disabled" } else { "enabled" }, view.name);
        Ok(())
    }

    async fn export_keytab(&self, name: &str, out: &std::path::Path) -> anyhow::Result<()> {
        let resp = self.send(ServiceRequest::new(Method::GET, self.url(name, "/keytab")), Some(name)).await?;
        let sealed: SealedKeytab =
            serde_json::from_slice(&resp.body).context("the KDC's answer is not a sealed keytab")?;
        let plain = resp.open_secret(&sealed.keytab_sealed).context("the sealed keytab does not open")?;
        let keytab: Keytab = serde_json::from_slice(&plain).context("the sealed keytab holds no keytab")?;
        let json = Zeroizing::new(serde_json::to_vec_pretty(&keytab)?);
        crate::cli::write_private_file(out, &json)?;
        println!("wrote {} key version(s) of {} to {}", keytab.keys.len(), keytab.principal, out.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("HTTP/hello.example.test@EXAMPLE.TEST"), "HTTP%2Fhello.example.test%40EXAMPLE.TEST");
        assert_eq!(segment("carol"), "carol");
        assert_eq!(segment("a b?#%"), "a%20b%3F%23%25");
    }
}

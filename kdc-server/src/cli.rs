//! The `kdc` command.

use std::io::{BufRead, IsTerminal as _, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use kdc_proto::{Clock, Realm, SystemClock, b64};
use zeroize::Zeroizing;

use crate::audit::{AuditDestination, AuditEvent, AuditLog, AuditSink, EventKind, FsyncPolicy, Outcome};
use crate::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_REALM, FileConfig, LogFormat};
use crate::cors::AllowedOrigins;
use crate::data_dir::{self, ADMIN_REPLAY_STATE, DirState};
use crate::http;
use crate::kdc::{BOOTSTRAP_ADMIN, Credential, Kdc, PrincipalSpec};
use crate::master_key::MasterKey;
use crate::state::AppState;
use crate::store::{DatabaseUrl, PostgresStore, PrincipalKind, PrincipalStore, PrincipalUpdate, SqliteStore};

pub(crate) use crate::data_dir::DATABASE_FILE;

/// The HTTP ticket authority's key distribution center.
#[derive(Debug, Parser)]
#[command(name = "kdc", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Configuration file [default: ./kdc.toml when present].
    #[arg(long, global = true, env = "KDC_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./kdc-data].
    #[arg(long, global = true, env = "KDC_DATA")]
    data: Option<PathBuf>,
    /// Keep the principal store in PostgreSQL (postgres://user@host:port/db)
    /// instead of the data directory's SQLite file; several KDCs may share
    /// it. The data directory still holds the master key [default: none].
    #[arg(long, global = true, env = "KDC_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    database_url: Option<DatabaseUrl>,
    /// Address to serve on [default: 127.0.0.1:8088].
    #[arg(long, global = true, env = "KDC_LISTEN")]
    listen: Option<String>,
    /// The base URL clients reach this KDC at (discovery advertises it;
    /// required when listening on a non-loopback address) [default:
    /// http(s)://<listen address>].
    #[arg(long, global = true, env = "KDC_PUBLIC_URL")]
    public_url: Option<String>,
    /// Serve https with this PEM certificate chain (leaf first); reloaded
    /// on SIGHUP without dropping connections.
    #[arg(long, global = true, env = "KDC_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, env = "KDC_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how long open requests may take to finish
    /// before the KDC exits anyway, seconds [default: 10].
    #[arg(long, global = true, env = "KDC_SHUTDOWN_GRACE")]
    shutdown_grace: Option<u64>,
    /// Realm of a new data directory [default: EXAMPLE.TEST].
    #[arg(long, global = true, env = "KDC_REALM")]
    realm: Option<String>,
    /// Log format [default: pretty when standard error is a terminal, else json].
    #[arg(long, global = true, env = "KDC_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// An origin (scheme://host[:port]) whose web pages may call this KDC
    /// (CORS); repeatable, comma-separated in the environment; replaces
    /// `[cors] allowed_origins` of kdc.toml. `*` is refused. Without any,
    /// no CORS headers are sent [default: none].
    #[arg(long = "cors-origin", value_name = "ORIGIN", global = true, env = "KDC_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Audit trail: a file to append hash-chained JSON events to (created
    /// 0600), or `-` for standard output. `serve` records ticket exchanges
    /// and admin API changes; `init`, `principal`, `keytab` and
    /// `signing-key rotate` record their changes to the same file [default:
    /// none].
    #[arg(long, global = true, env = "KDC_AUDIT_LOG", value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// When the audit file is synced to disk: `always` (before any answer)
    /// or `interval` (admin events before the answer, ticket events within
    /// 1 s) [default: interval].
    #[arg(long, global = true, env = "KDC_AUDIT_FSYNC", value_enum)]
    audit_fsync: Option<FsyncPolicy>,
    /// Share the replay cache and the failed-pre-authentication throttle
    /// with the other KDC instances through the Redis at this URL
    /// (redis://[user:password@]host:port[/db]); `serve` only. An
    /// unreachable Redis makes what needs it fail closed (503 + Retry-After)
    /// until it answers [default: none (in-process, one instance)].
    #[arg(long, global = true, env = "KDC_REPLAY_CACHE_URL", hide_env_values = true, value_name = "URL")]
    replay_cache_url: Option<String>,
    /// What to do (default: serve).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Initialise a realm in an empty data directory.
    Init {
        /// Read the bootstrap admin's password from standard input (otherwise
        /// a random one is generated and printed once).
        #[arg(long)]
        admin_password_stdin: bool,
    },
    /// Serve the KDC (initialising an empty data directory first).
    Serve,
    /// Manage principals.
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Export service keys.
    #[command(subcommand)]
    Keytab(KeytabCommand),
    /// Manage the KDC's ticket-signing keys.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Check an audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Administer a KDC over HTTP with an administrator's ticket (from
    /// `tkt login admin`, or a password).
    Admin(crate::admin_client::AdminArgs),
}

#[derive(Debug, Subcommand)]
enum SigningKeyCommand {
    /// Add the next signing key: published in the JWK set at once (a serving
    /// KDC picks it up within seconds), signing only after the publish
    /// delay, so every service has fetched it first. The key signing today
    /// stays published until every ticket it signed has expired.
    Rotate {
        /// Seconds until the new key starts signing [default: 3600; at least
        /// the JWK set's max-age + the KDC's key reload interval + the max
        /// clock skew, 605 with the defaults].
        #[arg(long, value_name = "SECS")]
        activate_after: Option<u64>,
    },
    /// List the signing keys: state (next, active, retiring, retired), when a
    /// serving KDC first published each, and when it signs from.
    List,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check that every line of an audit file is intact and chained to the
    /// one before it; exit 1 naming the first line that is not.
    Verify {
        /// The audit file.
        file: PathBuf,
    },
}

/// `kdc principal …`, and `kdc admin principal …`, its remote twin.
#[derive(Debug, Subcommand)]
pub(crate) enum PrincipalCommand {
    /// Add a user (password from stdin) or a service (random key).
    Add(AddArgs),
    /// List principals.
    List,
    /// Show one principal.
    Show {
        /// Principal name (bare names get the realm).
        name: String,
    },
    /// Disable a principal: it gets no tickets, even with a TGT issued before.
    Disable {
        /// Principal name.
        name: String,
    },
    /// Enable a disabled principal.
    Enable {
        /// Principal name.
        name: String,
    },
    /// Delete a principal and its keys. Its id is never reused.
    Delete {
        /// Principal name.
        name: String,
    },
    /// Rotate a principal's key (services: random; users: a new password,
    /// asked for on the terminal or read with --password-stdin).
    Rotate {
        /// Principal name.
        name: String,
        /// Read the new password from standard input (users only).
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `principal add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Principal name (bare names get the realm).
    pub(crate) name: String,
    /// A user: read the password from standard input (without it, and
    /// without --service, the password is asked for twice on the terminal).
    #[arg(long, conflicts_with = "service")]
    pub(crate) password_stdin: bool,
    /// A service: random key.
    #[arg(long)]
    pub(crate) service: bool,
    /// A role for its tickets (repeatable).
    #[arg(long = "role")]
    pub(crate) roles: Vec<String>,
    /// Maximum ticket lifetime for this principal, seconds.
    #[arg(long)]
    pub(crate) max_life: Option<u64>,
    /// Maximum renewable lifetime for this principal, seconds.
    #[arg(long)]
    pub(crate) max_renew: Option<u64>,
}

/// `kdc keytab …`, and `kdc admin keytab …`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeytabCommand {
    /// Write a service's live keys to a JSON keytab (mode 0600).
    Export {
        /// Service principal name.
        name: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Entry point of the `kdc` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kdc: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kdc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A `--database-url` (or `KDC_DATABASE_URL`) as clap parses it; the error
/// never repeats the URL, which may hold a password.
fn parse_database_url(s: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(s).map_err(|e| e.to_string())
}

struct Settings {
    data: PathBuf,
    /// The PostgreSQL principal store, if not the data directory's SQLite.
    database: Option<DatabaseUrl>,
    listen: String,
    public_url: Option<String>,
    /// Certificate and key files, when serving https.
    tls: Option<(PathBuf, PathBuf)>,
    shutdown_grace: std::time::Duration,
    realm: String,
    log_format: LogFormat,
    cors_origins: Vec<String>,
    audit_log: Option<AuditDestination>,
    audit_fsync: FsyncPolicy,
    replay_cache_url: Option<String>,
    file: FileConfig,
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let file = FileConfig::load(cli.config.as_deref())?;
    Ok(Settings {
        data: cli.data.clone().or_else(|| file.data.clone()).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        database: cli.database_url.clone().or_else(|| file.database_url.clone()),
        listen: cli.listen.clone().or_else(|| file.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into()),
        public_url: cli.public_url.clone().or_else(|| file.public_url.clone()),
        tls: match (
            cli.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            cli.tls_key.clone().or_else(|| file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key (KDC_TLS_KEY, tls_key in kdc.toml)"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert (KDC_TLS_CERT, tls_cert in kdc.toml)"),
        },
        realm: cli.realm.clone().or_else(|| file.realm.clone()).unwrap_or_else(|| DEFAULT_REALM.into()),
        shutdown_grace: std::time::Duration::from_secs(
            cli.shutdown_grace.or(file.shutdown_grace_secs).unwrap_or(crate::config::DEFAULT_SHUTDOWN_GRACE_SECS),
        ),
        // A list given by flags or environment replaces the file's whole.
        cors_origins: if cli.cors_origins.is_empty() {
            file.cors.allowed_origins.clone()
        } else {
            cli.cors_origins.clone()
        },
        log_format: cli.log_format.or(file.log_format).unwrap_or_else(LogFormat::for_stderr),
        audit_log: cli.audit_log.clone().or_else(|| file.audit_log.clone()).map(AuditDestination::from),
        audit_fsync: cli.audit_fsync.or(file.audit_fsync).unwrap_or_default(),
        replay_cache_url: cli.replay_cache_url.clone().or_else(|| file.replay_cache_url.clone()),
        file,
    })
}

fn master_key_env() -> Option<Zeroizing<String>> {
    std::env::var("KDC_MASTER_KEY").ok().map(Zeroizing::new)
}

/// Opens the principal store: the PostgreSQL database of `--database-url`,
/// else the SQLite file of a data directory that exists (see [`data_dir`]:
/// the callers check or create it first).
async fn open_store(s: &Settings) -> anyhow::Result<Arc<dyn PrincipalStore>> {
    match &s.database {
        Some(url) => {
            // The URL as shown: its password, if any, is `***`.
            let store =
                PostgresStore::open(url).await.with_context(|| format!("opening the principal store at {url}"))?;
            Ok(Arc::new(store))
        }
        None => {
            let store = SqliteStore::open(&s.data.join(DATABASE_FILE))
                .await
                .with_context(|| format!("opening the store in {}", s.data.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the store of an existing realm, creating nothing when there is none.
async fn open_existing_store(s: &Settings) -> anyhow::Result<Arc<dyn PrincipalStore>> {
    match &s.database {
        // The data directory holds the master key (unless KDC_MASTER_KEY
        // does); whether the database holds a realm, opening the KDC says.
        Some(_) => data_dir::require_dir(&s.data)?,
        None => data_dir::require_store(&s.data)?,
    }
    open_store(s).await
}

/// Where the realm's principals are kept, for messages.
fn store_location(s: &Settings) -> String {
    match &s.database {
        Some(url) => format!("{} (principal store: {url})", s.data.display()),
        None => s.data.display().to_string(),
    }
}

/// Refuses a data directory holding a SQLite store when the principal
/// store is a database: which of the two holds the realm would be unclear.
fn check_no_sqlite_beside(s: &Settings, state: &DirState) -> anyhow::Result<()> {
    if s.database.is_some() && *state == DirState::Store {
        bail!(
            "{} holds a SQLite principal store ({DATABASE_FILE}), and --database-url names another: use a data \
             directory of its own for a realm kept in PostgreSQL",
            s.data.display()
        );
    }
    Ok(())
}

/// A new password for `who`: one line of standard input with
/// `from_stdin`, else asked for twice on the terminal without echo (checked
/// against the password policy before the second time). Without a
/// terminal, says to use `--password-stdin`; `service_hint` mentions
/// `--service` for commands that take it.
pub(crate) fn new_password(
    who: &kdc_proto::Principal,
    from_stdin: bool,
    service_hint: bool,
) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin {
        return read_secret_line("password");
    }
    let or_service = if service_hint { " (or --service, for a service with a random key)" } else { "" };
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password for {who}: standard input is not a terminal; pipe the password in with --password-stdin{or_service}"
        );
    }
    if service_hint {
        eprintln!("a user; for a service, stop here and pass --service (it gets a random key)");
    }
    let prompt = |text: String| -> anyhow::Result<Zeroizing<String>> {
        Ok(Zeroizing::new(rpassword::prompt_password(text).context("reading the password from the terminal")?))
    };
    let first = prompt(format!("New password for {who}: "))?;
    if first.is_empty() {
        bail!("empty password");
    }
    crate::password_policy::check(&first, who).map_err(crate::KdcError::from)?;
    let again = prompt(format!("Again, the new password for {who}: "))?;
    if *first != *again {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

fn read_secret_line(what: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line).with_context(|| format!("reading the {what} from standard input"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    if trimmed.is_empty() {
        bail!("the {what} on standard input is empty");
    }
    if trimmed.len() > 1024 {
        bail!("the {what} is longer than 1024 bytes");
    }
    Ok(trimmed)
}

/// A random bootstrap password that passes the password policy (any 24
/// random base64url characters all but certainly do; the loop makes it
/// certain).
fn random_password(admin: &kdc_proto::Principal) -> Zeroizing<String> {
    loop {
        let mut bytes = Zeroizing::new([0u8; 18]);
        rand::fill(&mut bytes[..]);
        let pw = Zeroizing::new(b64::encode(&bytes[..]));
        if crate::password_policy::check(&pw, admin).is_ok() {
            return pw;
        }
    }
}

/// The bootstrap administrator's name in `realm`.
fn bootstrap_admin(realm: &str) -> anyhow::Result<kdc_proto::Principal> {
    let realm: Realm = realm.parse().with_context(|| format!("realm {realm:?}"))?;
    Ok(kdc_proto::Principal::new(BOOTSTRAP_ADMIN, None, realm)?)
}

/// Initialises the realm in `data` if its store holds none. Returns the
/// generated admin password when one was generated.
async fn initialize(
    store: &dyn PrincipalStore,
    data: &Path,
    realm: &str,
    admin_password: Option<Zeroizing<String>>,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    let admin = bootstrap_admin(realm)?;
    let realm = admin.realm().clone();
    let master = MasterKey::load(data, master_key_env().as_deref().map(String::as_str), true)?;
    let generated = admin_password.is_none();
    let password = admin_password.unwrap_or_else(|| random_password(&admin));
    Kdc::initialize(store, &master, &realm, password.clone(), SystemClock.now().as_secs()).await?;
    Ok(generated.then_some(password))
}

async fn open_kdc(s: &Settings, store: Arc<dyn PrincipalStore>) -> anyhow::Result<Kdc> {
    let master = MasterKey::load(&s.data, master_key_env().as_deref().map(String::as_str), false)?;
    Ok(Kdc::open(store, master, s.file.policy, s.file.throttle.clone(), SystemClock.now()).await?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Admin(args)) = cli.command {
        // Remote: nothing of this machine's data directory or kdc.toml.
        return crate::admin_client::run(args).await;
    }
    let s = settings(&cli)?;
    match cli.command {
        None | Some(Command::Serve) => serve(&s).await,
        // Handled above, before any local configuration is read.
        Some(Command::Admin(_)) => Ok(()),
        Some(Command::Init { admin_password_stdin }) => {
            // Refused before anything is written: a directory of other
            // things, or one that holds a realm.
            let state = data_dir::check_for_new_realm(&s.data)?;
            check_no_sqlite_beside(&s, &state)?;
            if (state == DirState::Store || s.database.is_some()) && open_store(&s).await?.realm().await?.is_some() {
                bail!("{} already holds a realm", store_location(&s));
            }
            let admin = bootstrap_admin(&s.realm)?;
            let pw = if admin_password_stdin {
                let pw = read_secret_line("admin password")?;
                crate::password_policy::check(&pw, &admin).map_err(crate::KdcError::from)?;
                Some(pw)
            } else {
                None
            };
            data_dir::create(&s.data)?;
            let store = open_store(&s).await?;
            let mut audit = CliAudit::open(&s)?;
            let generated = initialize(store.as_ref(), &s.data, &s.realm, pw).await?;
            // The generated password first: it is shown once, whatever follows.
            audit.say(format!("initialised realm {} in {}", s.realm, store_location(&s)));
            audit.say(bootstrap_text(&s.realm, generated.as_deref().map(String::as_str)));
            audit.record(realm_initialized(&s.realm), "the realm was initialised")
        }
        Some(Command::Principal(cmd)) => {
            let store = open_existing_store(&s).await?;
            let kdc = open_kdc(&s, store).await?;
            // Opened before any change, so an unwritable trail stops the
            // command before it changes anything.
            let audit = match cmd {
                PrincipalCommand::List | PrincipalCommand::Show { .. } => CliAudit::none(),
                _ => CliAudit::open(&s)?,
            };
            principal_command(&kdc, cmd, audit).await
        }
        Some(Command::Keytab(KeytabCommand::Export { name, out })) => {
            let store = open_existing_store(&s).await?;
            let kdc = open_kdc(&s, store).await?;
            let mut audit = CliAudit::open(&s)?;
            let name = kdc.principal_name(&name)?;
            let keytab = kdc.keytab(&name, SystemClock.now().as_secs()).await?;
            let kvnos = keytab.keys.iter().map(|k| k.kvno).collect();
            audit.record(
                AuditEvent::new(EventKind::KeytabExported, Outcome::Success).target(&name).kvnos(kvnos),
                "no keytab was written",
            )?;
            let json = Zeroizing::new(serde_json::to_vec_pretty(&keytab)?);
            write_private_file(&out, &json)?;
            audit.say(format!("wrote {} key version(s) of {name} to {}", keytab.keys.len(), out.display()));
            Ok(())
        }
        Some(Command::SigningKey(cmd)) => {
            let store = open_existing_store(&s).await?;
            let kdc = open_kdc(&s, store).await?;
            // Opened before the change, as for principals.
            let audit = match cmd {
                SigningKeyCommand::List => CliAudit::none(),
                SigningKeyCommand::Rotate { .. } => CliAudit::open(&s)?,
            };
            signing_key_command(&kdc, cmd, audit).await
        }
        Some(Command::Audit(AuditCommand::Verify { file })) => {
            let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            match crate::audit::verify(std::io::BufReader::new(f)) {
                Ok(summary) => {
                    println!(
                        "{}: {} event(s), chain intact; last hash {}",
                        file.display(),
                        summary.events,
                        summary.last_hash
                    );
                    Ok(())
                }
                Err(e) => bail!("{}: {e}", file.display()),
            }
        }
    }
}

/// A Unix time with how far it is from `now`.
fn when(t: u64, now: u64) -> String {
    if t >= now { format!("{t} (in {} s)", t - now) } else { format!("{t} ({} s ago)", now - t) }
}

async fn signing_key_command(kdc: &Kdc, cmd: SigningKeyCommand, mut audit: CliAudit) -> anyhow::Result<()> {
    let now = SystemClock.now().as_secs();
    match cmd {
        SigningKeyCommand::Rotate { activate_after } => {
            let r = kdc.rotate_signing_key(activate_after, now).await?;
            let event = AuditEvent::new(EventKind::SigningKeyRotated, Outcome::Success).target(&r.kid).changes(
                serde_json::json!({
                    "activates_at": r.activates_at,
                    "previous": r.previous,
                    "previous_retires_at": r.previous_retires_at,
                }),
            );
            audit.record(event, &format!("signing key {} was added", r.kid))?;
            audit.say(format!(
                "new signing key {}: published now (a serving KDC picks it up within {} s), signs from {}",
                r.kid,
                crate::signing_keys::RELOAD_INTERVAL_SECS,
                when(r.activates_at, now)
            ));
            if let Some(prev) = &r.previous {
                audit.say(format!(
                    "previous key {prev}: signs until then, published until {}, when every ticket it signed has \
                     expired",
                    when(r.previous_retires_at, now)
                ));
            }
        }
        SigningKeyCommand::List => {
            let floor = crate::signing_keys::publish_floor_secs(kdc.policy());
            for (k, state) in kdc.signing_key_states(now).await? {
                let published = k.published_at.map_or_else(|| "not yet".to_owned(), |p| when(p, now));
                let signs_from = k.signs_from.map_or_else(
                    || format!("{floor} s after a serving KDC publishes it, not before {}", when(k.activates_at, now)),
                    |f| when(f, now),
                );
                let retires = k.retires_at.map_or_else(|| "-".to_owned(), |r| when(r, now));
                println!(
                    "{}\t{}\tpublished {published}\tsigns from {signs_from}\tretires {retires}",
                    k.kid,
                    state.as_str()
                );
            }
        }
    }
    Ok(())
}

/// The audit trail of one `kdc` command that changes something: its events
/// are appended and synced before the command reports success.
struct CliAudit {
    sink: Option<AuditSink>,
    /// The trail goes to standard output (`--audit-log -`).
    on_stdout: bool,
}

impl CliAudit {
    fn none() -> Self {
        Self { sink: None, on_stdout: false }
    }

    fn open(s: &Settings) -> anyhow::Result<Self> {
        match &s.audit_log {
            Some(dest) => Ok(Self {
                sink: Some(AuditSink::open(dest).context("opening the audit log")?),
                on_stdout: *dest == AuditDestination::Stdout,
            }),
            None => Ok(Self::none()),
        }
    }

    /// Records `event` (actor `cli`); `if_failed` says what happened
    /// nevertheless, for the error.
    fn record(&mut self, event: AuditEvent, if_failed: &str) -> anyhow::Result<()> {
        let Some(sink) = &mut self.sink else { return Ok(()) };
        let written = sink.append(&[(event.actor("cli"), SystemClock.now())]).and_then(|()| sink.sync());
        written.with_context(|| format!("{if_failed}, but the audit log could not record it"))
    }

    /// Prints a line of the command's own output: to standard output, or to
    /// standard error when the audit trail goes to standard output, which
    /// then holds nothing but the chain.
    fn say(&self, line: impl std::fmt::Display) {
        if self.on_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

fn realm_initialized(realm: &str) -> AuditEvent {
    AuditEvent::new(EventKind::RealmInitialized, Outcome::Success)
        .target(realm)
        .changes(serde_json::json!({ "bootstrap_admin": format!("{BOOTSTRAP_ADMIN}@{realm}") }))
}

fn bootstrap_text(realm: &str, password: Option<&str>) -> String {
    match password {
        Some(pw) => {
            format!("bootstrap administrator: {BOOTSTRAP_ADMIN}@{realm}\npassword (shown once, store it now): {pw}")
        }
        None => format!("bootstrap administrator: {BOOTSTRAP_ADMIN}@{realm} (password from standard input)"),
    }
}

/// What to do after the first start, with this KDC's data directory and URL.
fn next_steps(data: &Path, url: &str) -> String {
    let d = data.display();
    let url = url.trim_end_matches('/');
    format!(
        "\nnext steps (in another terminal; the KDC sees changes at once):\n\
         \x20 add a user:          kdc principal add alice --data {d}    (asks for the password; or --password-stdin)\n\
         \x20 add a service:       kdc principal add HTTP/hello.example.test --data {d} --service\n\
         \x20 export its keytab:   kdc keytab export HTTP/hello.example.test --data {d} --out hello.keytab\n\
         \x20 log in as the user:  TKT_KDC_URL={url} tkt login alice\n\
         \x20 administer remotely: TKT_KDC_URL={url} tkt login admin, then kdc admin --kdc {url} principal list"
    )
}

/// Writes `bytes` to `path` with mode 0600: into a new temporary file beside
/// it (never following a symlink), synced, then renamed over `path`.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut suffix = [0u8; 6];
    rand::fill(&mut suffix[..]);
    let tmp = dir.join(format!(".keytab-{}.tmp", b64::encode(suffix)));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn principal_command(kdc: &Kdc, cmd: PrincipalCommand, mut audit: CliAudit) -> anyhow::Result<()> {
    let now = SystemClock.now().as_secs();
    match cmd {
        PrincipalCommand::Add(a) => {
            let name = kdc.principal_name(&a.name)?;
            let credential = if a.service {
                Credential::Random
            } else {
                Credential::Password(new_password(&name, a.password_stdin, true)?)
            };
            let rec = kdc
                .create_principal(
                    PrincipalSpec {
                        name,
                        credential,
                        roles: a.roles,
                        max_life_secs: a.max_life,
                        max_renew_secs: a.max_renew,
                    },
                    now,
                )
                .await?;
            let event = AuditEvent::new(EventKind::PrincipalCreated, Outcome::Success).target(&rec.name).changes(
                serde_json::json!({
                    "kind": rec.kind.as_str(),
                    "roles": rec.roles,
                    "max_life_secs": rec.max_life_secs,
                    "max_renew_secs": rec.max_renew_secs,
                }),
            );
            audit.record(event, &format!("{} was created", rec.name))?;
            audit.say(format!("created {} ({}, kvno 1)", rec.name, rec.kind.as_str()));
        }
        PrincipalCommand::List => {
            let mut after: Option<String> = None;
            loop {
                let page = kdc.list_principals(after.as_deref(), 500).await?;
                for r in &page {
                    let status = if r.disabled { "disabled" } else { "enabled" };
                    println!("{}\t{}\t{status}\t{}", r.name, r.kind.as_str(), r.roles.join(","));
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.name.clone()),
                    _ => break,
                }
            }
        }
        PrincipalCommand::Show { name } => {
            let name = kdc.principal_name(&name)?;
            let r = kdc.get(&name).await?;
            let keys = kdc.key_versions(&r, now).await?;
            println!("name:       {}", r.name);
            println!("id:         {}", r.id);
            println!("kind:       {}", r.kind.as_str());
            println!("status:     {}", if r.disabled { "disabled" } else { "enabled" });
            println!("roles:      {}", r.roles.join(", "));
            println!("max life:   {}", r.max_life_secs.map_or("realm default".into(), |s| format!("{s} s")));
            println!("max renew:  {}", r.max_renew_secs.map_or("realm default".into(), |s| format!("{s} s")));
            for k in keys {
                let until = k.retires_at.map_or("current".to_owned(), |e| format!("retires at {e}"));
                println!("key:        kvno {} ({until})", k.kvno);
            }
        }
        PrincipalCommand::Disable { name } => set_disabled(kdc, &name, true, &mut audit).await?,
        PrincipalCommand::Enable { name } => set_disabled(kdc, &name, false, &mut audit).await?,
        PrincipalCommand::Delete { name } => {
            let name = kdc.principal_name(&name)?;
            kdc.delete_principal(&name, None).await?;
            let event = AuditEvent::new(EventKind::PrincipalDeleted, Outcome::Success).target(&name);
            audit.record(event, &format!("{name} was deleted"))?;
            audit.say(format!("deleted {name}"));
        }
        PrincipalCommand::Rotate { name, password_stdin } => {
            let name = kdc.principal_name(&name)?;
            let rec = kdc.get(&name).await?;
            let pw = match (rec.kind, password_stdin) {
                (PrincipalKind::User, from_stdin) => Some(new_password(&name, from_stdin, false)?),
                (PrincipalKind::Service, true) => {
                    bail!("{name} is a service: its keys are random, never passwords")
                }
                (PrincipalKind::Service, false) => None,
            };
            let kvno = kdc.rotate(&name, pw, now).await?;
            let event = AuditEvent::new(EventKind::PrincipalRotated, Outcome::Success).target(&name).kvno(kvno);
            audit.record(event, &format!("{name} was rotated to kvno {kvno}"))?;
            audit.say(format!(
                "rotated {name}: new kvno {kvno}; previous versions keep working for {} s",
                kdc.policy().key_grace_secs
            ));
        }
    }
    Ok(())
}

async fn set_disabled(kdc: &Kdc, name: &str, disabled: bool, audit: &mut CliAudit) -> anyhow::Result<()> {
    let name = kdc.principal_name(name)?;
    let update = PrincipalUpdate { disabled: Some(disabled), ..Default::default() };
    kdc.update_principal(&name, &update).await?;
    let done = if disabled { "disabled" } else { "enabled" };
    let event = AuditEvent::new(EventKind::PrincipalUpdated, Outcome::Success)
        .target(&name)
        .changes(crate::admin::update_changes(&update));
    audit.record(event, &format!("{name} was {done}"))?;
    audit.say(format!("{done} {name}"));
    Ok(())
}

/// Whether log lines get colour codes: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KDC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file.
    let no_color = std::env::var_os("NO_COLOR");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted(std::io::stderr().is_terminal(), no_color.as_deref()));
    let _ = match format {
        // Fields at the top level of each object, beside `message`.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

async fn serve(s: &Settings) -> anyhow::Result<()> {
    init_logging(s.log_format);
    let addr: SocketAddr = s.listen.parse().with_context(|| format!("listen address {:?}", s.listen))?;
    // Refuse a configuration that cannot advertise a trustworthy URL, or a
    // certificate that cannot be served, before touching anything.
    crate::config::advertised_base_url(s.public_url.as_deref(), addr, s.tls.is_some())?;
    let cors = AllowedOrigins::parse(&s.cors_origins)?;
    let tls = match &s.tls {
        Some((cert, key)) => Some(Arc::new(auth_middleware::ServerTls::from_pem_files(cert, key)?)),
        None => None,
    };
    // A realm is only created in a missing or empty directory: a mistyped
    // path to a folder of other things is refused before anything is
    // written into it.
    let state = data_dir::check_for_new_realm(&s.data)?;
    check_no_sqlite_beside(s, &state)?;
    // The address next, so a port in use fails before a realm is created.
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let audit = match &s.audit_log {
        Some(dest) => AuditLog::start(dest, s.audit_fsync).context("opening the audit log")?,
        None => AuditLog::disabled(),
    };
    // With the audit trail on standard output, the banner goes to standard
    // error, so standard output holds nothing but the chain.
    let say = |line: String| {
        if s.audit_log == Some(AuditDestination::Stdout) {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if state != DirState::Store {
        data_dir::create(&s.data)?;
    }
    let store = open_store(s).await?;
    let first_start = store.realm().await?.is_none();
    if first_start {
        if s.audit_log == Some(AuditDestination::Stdout) {
            // Standard output carries the chain and standard error the log:
            // a generated password has nowhere to go that is not kept.
            bail!(
                "{} holds no realm, and with --audit-log - the generated bootstrap password could only be printed \
                 into the log (standard error): run `kdc init` first",
                s.data.display()
            );
        }
        let generated = initialize(store.as_ref(), &s.data, &s.realm, None).await?;
        // The generated password first: it is shown once, whatever follows.
        say(format!("initialised realm {} in {}", s.realm, store_location(s)));
        say(bootstrap_text(&s.realm, generated.as_deref().map(String::as_str)));
        let event = realm_initialized(&s.realm).actor("cli");
        audit
            .record(event, SystemClock.now())
            .await
            .context("the realm was initialised, but the audit log could not record it")?;
    }
    let mut kdc = open_kdc(s, store).await?;
    if let Some(url) = &s.replay_cache_url {
        // The URL is not repeated anywhere: it may hold a password.
        kdc.share_replay_cache(url).await?;
        tracing::info!("replay cache and pre-authentication throttle shared through Redis");
    }
    let local = listener.local_addr()?;
    let public_url = crate::config::advertised_base_url(s.public_url.as_deref(), local, tls.is_some())?;
    // Before the serving line, which tells a supervisor it may now signal.
    let _reloader = match &tls {
        Some(tls) => Some(tls.reload_on_sighup().context("listening for SIGHUP")?),
        None => None,
    };
    say(format!("kdc serving realm {} on {}://{local}", kdc.realm(), crate::config::scheme(tls.is_some())));
    say(format!("discovery advertises {public_url}"));
    if first_start {
        say(next_steps(&s.data, &public_url));
        if s.database.is_some() {
            say("  (each `kdc principal`/`keytab` command needs the same --database-url, or KDC_DATABASE_URL)"
                .to_owned());
        }
    }
    if tls.is_none() && !local.ip().is_loopback() {
        // Plain HTTP off this machine is only right behind a TLS-terminating
        // proxy on a trusted network; say so where an operator looks.
        let warning = format!(
            "WARNING: serving plain HTTP on {local}, which is not a loopback address: names, roles, \
             pre-authentication data (an offline password-guessing target) and tickets cross the network \
             unencrypted unless a TLS proxy sits in front. Serve https with --tls-cert and --tls-key."
        );
        eprintln!("{warning}");
        tracing::warn!(%local, "serving plain HTTP on a non-loopback address");
    }
    let _ = std::io::stdout().flush();
    tracing::info!(realm = %kdc.realm(), %local, audit = audit.is_enabled(), "serving");
    // One KDC per data directory keeps the admin layer's replay cache in a
    // file there across restarts. KDCs sharing a database (and maybe a data
    // directory) keep it in memory each: the file's lock admits one process,
    // and a file per instance would not stop a replay at a sibling anyway.
    // The cost: admin requests are refused as stale for the first max-skew
    // after a start (see auth_middleware::replay_state).
    let admin_replay = s.database.is_none().then(|| s.data.join(ADMIN_REPLAY_STATE));
    if s.database.is_some() && kdc.replay_cache_url().is_none() {
        // Each instance then remembers only what it accepted itself: an
        // authenticator (a TGS request, an admin change) accepted by one can
        // be replayed once at a sibling within the skew.
        let warning = "WARNING: principal store in PostgreSQL without --replay-cache-url: each KDC instance keeps \
                       its own replay cache, so a request accepted by one can be replayed once at another. Give \
                       every instance the same --replay-cache-url (docs/DEPLOYMENT.md). Admin requests are also \
                       refused as stale until one max-skew has passed since this start.";
        eprintln!("{warning}");
        tracing::warn!("replay cache not shared between KDC instances");
    }
    if !cors.is_empty() {
        tracing::info!(origins = ?cors.origins().collect::<Vec<_>>(), "CORS: pages from these origins may call the KDC");
        for origin in cors.origins().filter(|o| crate::cors::is_insecure_remote(o)) {
            // A page served over plain http can be rewritten in transit, and
            // then speaks to the KDC with the user's credentials.
            eprintln!(
                "WARNING: CORS origin {origin} is plain http on a non-loopback host: anyone on the path to \
                 that page can change what it does with the KDC. Serve the page over https."
            );
            tracing::warn!(%origin, "plain-http CORS origin on a non-loopback host");
        }
    }
    let state = AppState::new(Arc::new(kdc), Arc::new(SystemClock), public_url, admin_replay.as_deref())
        .await?
        .with_cors(cors)
        .with_audit(audit.clone());
    let limits = auth_middleware::ServeLimits::default().shutdown_grace(s.shutdown_grace);
    let served = http::serve_with_tls(listener, state, limits, tls.as_deref(), shutdown_signal()).await;
    // Admin changes run detached from their requests, so that a request
    // dropped by the shutdown grace cannot leave one made but unrecorded:
    // give those still running the time they need (bounded).
    if tokio::time::timeout(crate::audit::CHANGES_AT_SHUTDOWN, audit.changes_finished()).await.is_err() {
        tracing::error!("administrative changes were still running at exit; their audit events may be missing");
    }
    // Whatever stopped serving, what the trail holds is made durable.
    if let Err(e) = audit.flush().await {
        tracing::error!(error = %e, "syncing the audit log at shutdown failed");
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod colour_tests {
    use super::colour_wanted;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))), "an empty NO_COLOR is as if unset");
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}

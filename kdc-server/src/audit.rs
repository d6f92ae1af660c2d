//! The audit trail: one JSON line per ticket issued, renewed or refused and
//! per administrative change, each line carrying the SHA-256 of its own
//! content and of the line before it, so an edited, deleted or inserted line
//! shows (`kdc audit verify`). The format, the event list and the policies
//! (fsync, write failures, rotation) are in `docs/AUDIT.md`.
//!
//! Recording two events to a file and checking the chain: the test
//! `two_events_recorded_to_a_file_verify_as_a_chain` below.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read as _, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kdc_proto::{Kvno, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev` of the first line of a file: 64 zeros.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long an event may wait for `fdatasync` under [`FsyncPolicy::Interval`].
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How long `kdc serve` waits at exit for administrative changes still
/// running (and their events): longer than a change can take (the store's
/// 10 s lock wait, then the wait for its event).
pub(crate) const CHANGES_AT_SHUTDOWN: Duration = Duration::from_secs(30);

/// Most jobs the writer's queue holds: past that, ticket events are
/// dropped (and counted), so a stuck disk cannot grow memory without bound.
pub(crate) const QUEUE_CAPACITY: usize = 4096;

/// Queue slots ticket events leave free for administrative events.
pub(crate) const ADMIN_RESERVE: usize = 64;

/// Longest a ticket exchange waits for its event to be written (and synced,
/// as the policy says); the event stays queued past it.
pub(crate) const TICKET_WAIT: Duration = Duration::from_secs(1);

/// Longest an administrative change waits for its event (then `503`).
pub(crate) const ADMIN_WAIT: Duration = Duration::from_secs(10);

/// How long the writer may be in one write or sync before it counts as
/// stuck: ticket exchanges then stop waiting for it, and administrative
/// changes are refused.
pub const STALL_AFTER: Duration = Duration::from_secs(2);

/// Most events the writer puts in one write (and one sync).
const MAX_BATCH: usize = 512;

/// Longest line the KDC writes, newline included. Events are a few hundred
/// bytes; the largest (a creation with 64 roles of 64 bytes) stays under
/// 5 KiB. An event that would be longer loses its `changes` and `kvnos` and
/// says `"truncated":true` ([`seal_line`]).
pub(crate) const MAX_LINE_LEN: usize = 16 * 1024;

/// Longest name an event holds in `actor`, `target` or `service`: a
/// principal name's limit. A longer one (only a refused request can carry
/// one) is cut there and ends with `…`.
pub(crate) const MAX_NAME_LEN: usize = kdc_proto::limits::MAX_PRINCIPAL_LEN;

/// How much of a file's end is read at a time to find its last line:
/// further back, up to [`MAX_VERIFY_LINE`], when the last line is longer
/// (a line written by an older KDC before lines were bounded).
const TAIL_WINDOW: u64 = 64 * 1024;

/// Longest line `verify` reads.
const MAX_VERIFY_LINE: u64 = 1024 * 1024;

/// What every line ends with: `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// A ticket was issued by the initial (AS) or service (TGS) exchange.
    #[serde(rename = "ticket.issued")]
    TicketIssued,
    /// A ticket was renewed.
    #[serde(rename = "ticket.renewed")]
    TicketRenewed,
    /// A ticket exchange was refused or failed (not the `preauth-required`
    /// challenge that starts every login: it proves nothing).
    #[serde(rename = "ticket.refused")]
    TicketRefused,
    /// A principal was created (or creating one was refused).
    #[serde(rename = "principal.created")]
    PrincipalCreated,
    /// A principal was disabled, enabled, or its roles or lifetimes changed.
    #[serde(rename = "principal.updated")]
    PrincipalUpdated,
    /// A principal was deleted.
    #[serde(rename = "principal.deleted")]
    PrincipalDeleted,
    /// A principal's key was rotated.
    #[serde(rename = "principal.rotated")]
    PrincipalRotated,
    /// A principal's pre-authentication lock-out was lifted by an
    /// administrator (its throttle counters forgotten).
    #[serde(rename = "principal.unlocked")]
    PrincipalUnlocked,
    /// A service's keys were exported in a keytab.
    #[serde(rename = "keytab.exported")]
    KeytabExported,
    /// A realm was initialised (with its bootstrap administrator).
    #[serde(rename = "realm.initialized")]
    RealmInitialized,
    /// An authenticated admin request was refused because its caller is no
    /// longer an administrator.
    #[serde(rename = "admin.refused")]
    AdminRefused,
    /// The next ticket-signing key was added (`kdc signing-key rotate`).
    #[serde(rename = "signing_key.rotated")]
    SigningKeyRotated,
}

impl EventKind {
    /// The name written in `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TicketIssued => "ticket.issued",
            Self::TicketRenewed => "ticket.renewed",
            Self::TicketRefused => "ticket.refused",
            Self::PrincipalCreated => "principal.created",
            Self::PrincipalUpdated => "principal.updated",
            Self::PrincipalDeleted => "principal.deleted",
            Self::PrincipalRotated => "principal.rotated",
            Self::PrincipalUnlocked => "principal.unlocked",
            Self::KeytabExported => "keytab.exported",
            Self::RealmInitialized => "realm.initialized",
            Self::AdminRefused => "admin.refused",
            Self::SigningKeyRotated => "signing_key.rotated",
        }
    }

    /// Whether it records a ticket exchange: frequent, and never held up
    /// for long by the audit trail ([`AuditLog::record`]).
    pub fn is_ticket(self) -> bool {
        matches!(self, Self::TicketIssued | Self::TicketRenewed | Self::TicketRefused)
    }

    /// Whether the event is synced to disk before it is acknowledged
    /// whatever the [`FsyncPolicy`]: everything but the ticket exchanges,
    /// which are frequent; administrative events are rare and each matters.
    pub fn always_synced(self) -> bool {
        !self.is_ticket()
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused: the request was wrong, not allowed or throttled (a 4xx).
    Refused,
    /// The KDC failed (a 5xx).
    Error,
}

impl Outcome {
    /// The outcome of an answer refused with problem `kind`: a failure on
    /// the KDC's side (a kind answered `5xx`) or a refusal of the request.
    pub fn of_refusal(kind: &kdc_proto::ProblemKind) -> Self {
        if kind.status() >= 500 { Self::Error } else { Self::Refused }
    }
}

/// Which ticket exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exchange {
    /// `POST /tickets/initial` (AS).
    Initial,
    /// `POST /tickets` (TGS).
    Service,
    /// `POST /tickets/renew`.
    Renew,
}

/// One event, before the writer numbers, dates and chains it. Holds names,
/// addresses, problem kinds and key version numbers only: there is no field
/// a password, key, ticket, authenticator or sealed value could go in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    event: EventKind,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<Exchange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kvno: Option<Kvno>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kvnos: Option<Vec<Kvno>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<Value>,
    /// Set when `changes` and `kvnos` were left out to keep the line under
    /// [`MAX_LINE_LEN`].
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` that ended with `outcome`.
    pub fn new(kind: EventKind, outcome: Outcome) -> Self {
        Self {
            event: kind,
            outcome,
            actor: None,
            target: None,
            service: None,
            exchange: None,
            problem: None,
            reason: None,
            kvno: None,
            kvnos: None,
            changes: None,
            truncated: None,
            address: None,
            request_id: None,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> EventKind {
        self.event
    }

    /// Who did it: the client of an exchange, an administrator, or `cli`
    /// (cut to [`MAX_NAME_LEN`]).
    #[must_use]
    pub fn actor(mut self, actor: impl ToString) -> Self {
        self.actor = Some(bounded(actor.to_string()));
        self
    }

    /// The principal acted on (admin events), cut to [`MAX_NAME_LEN`]: a
    /// refused request may name anything up to a request's size.
    #[must_use]
    pub fn target(mut self, target: impl ToString) -> Self {
        self.target = Some(bounded(target.to_string()));
        self
    }

    /// Sets the target unless one is set already.
    #[must_use]
    pub fn target_or(self, target: impl ToString) -> Self {
        if self.target.is_some() { self } else { self.target(target) }
    }

    /// The service a ticket is (or was to be) for (cut to [`MAX_NAME_LEN`]).
    #[must_use]
    pub fn service(mut self, service: impl ToString) -> Self {
        self.service = Some(bounded(service.to_string()));
        self
    }

    /// The ticket exchange.
    #[must_use]
    pub fn exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// The problem kind the client was answered with (the `type` suffix).
    #[must_use]
    pub fn problem(mut self, problem: &'static str) -> Self {
        self.problem = Some(problem);
        self
    }

    /// What the problem kind does not tell the client on purpose (say
    /// `unknown-principal` behind a `preauth-failed`).
    #[must_use]
    pub fn reason(mut self, reason: Option<&'static str>) -> Self {
        self.reason = reason;
        self
    }

    /// The key version a rotation created.
    #[must_use]
    pub fn kvno(mut self, kvno: Kvno) -> Self {
        self.kvno = Some(kvno);
        self
    }

    /// The key versions a keytab holds.
    #[must_use]
    pub fn kvnos(mut self, kvnos: Vec<Kvno>) -> Self {
        self.kvnos = Some(kvnos);
        self
    }

    /// What a creation set or an update changed (names, roles, lifetimes,
    /// `disabled`; never a credential).
    #[must_use]
    pub fn changes(mut self, changes: Value) -> Self {
        self.changes = Some(changes);
        self
    }

    /// The request it answers: its id and the client address the KDC saw
    /// (behind a trusted proxy, the address the proxy forwarded for).
    #[must_use]
    pub fn request(mut self, request_id: &str, address: Option<IpAddr>) -> Self {
        self.request_id = Some(request_id.to_owned());
        self.address = address;
        self
    }
}

/// `name`, cut to [`MAX_NAME_LEN`] bytes (on a character boundary) and
/// marked with `…` when it is longer.
fn bounded(mut name: String) -> String {
    if name.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push('…');
    }
    name
}

/// An event as written, hash aside: the fields in this order, then `hash`.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    ts: String,
    #[serde(flatten)]
    event: &'a AuditEvent,
    prev: &'a str,
}

/// The end of a chain: the last line's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tip {
    seq: u64,
    hash: String,
}

impl Tip {
    fn genesis() -> Self {
        Self { seq: 0, hash: GENESIS.to_owned() }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `at` as RFC 3339 in UTC with milliseconds: `2026-11-25T09:30:00.123Z`.
pub(crate) fn rfc3339(at: UnixMillis) -> String {
    let (secs, millis) = (at.0 / 1000, at.0 % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days on or after 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes `event` as the line after `tip` (with its newline) and advances
/// `tip`. The hash is SHA-256 over the line's bytes from `{` up to `prev`'s
/// value and a closing `}`: everything but the hash itself.
///
/// A line is at most [`MAX_LINE_LEN`]: names are bounded when the event is
/// made, and an event whose `changes` or `kvnos` would take it past that is
/// written without them, marked `"truncated":true`.
fn seal_line(tip: &mut Tip, event: &AuditEvent, at: UnixMillis) -> Result<Vec<u8>, AuditError> {
    // `read_tip` refuses such a tip; this keeps an overflow from ever
    // panicking the writer.
    let seq = tip.seq.checked_add(1).ok_or(AuditError::DamagedTail("the last line's seq is the largest there is"))?;
    let encode = |event: &AuditEvent| {
        serde_json::to_vec(&Unsealed { seq, ts: rfc3339(at), event, prev: &tip.hash }).map_err(|_| AuditError::Encoding)
    };
    // The closing `}` gives way to the hash member, then a newline.
    let fits = |line: &Vec<u8>| line.len() + HASH_SUFFIX_LEN <= MAX_LINE_LEN;
    let mut line = encode(event)?;
    if !fits(&line) {
        let cut = AuditEvent { changes: None, kvnos: None, truncated: Some(true), ..event.clone() };
        line = encode(&cut)?;
        if !fits(&line) {
            // Every other field is bounded: not reached.
            return Err(AuditError::Encoding);
        }
    }
    let hash = hex(&Sha256::digest(&line));
    // A struct always serializes to an object: the last byte is its `}`.
    if line.pop() != Some(b'}') {
        return Err(AuditError::Encoding);
    }
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    *tip = Tip { seq, hash };
    Ok(line)
}

/// Why the audit trail could not be written.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading, writing, locking or syncing the file failed.
    #[error("audit log: {0}")]
    Io(Arc<std::io::Error>),
    /// The file's last line is not a complete audit event: the chain cannot
    /// go on from it.
    #[error(
        "the audit log ends with a damaged line ({0}): check it with `kdc audit verify`, and move the file aside \
         to start a new one"
    )]
    DamagedTail(&'static str),
    /// An event could not be encoded.
    #[error("encoding an audit event failed")]
    Encoding,
    /// The writer thread is gone.
    #[error("the audit writer has stopped")]
    Stopped,
    /// The last write failed, or the writer is stuck, or its queue is full:
    /// administrative changes wait until it works again.
    #[error("the audit log is failing")]
    Unavailable,
    /// The writer's queue is full: the event was dropped.
    #[error("the audit queue is full: the event was dropped")]
    QueueFull,
    /// The writer did not confirm the event in time; it is still queued.
    #[error("the audit log did not confirm the event in time")]
    TimedOut,
}

impl From<std::io::Error> for AuditError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDestination {
    /// Standard output (`--audit-log -`), for a log collector.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl From<PathBuf> for AuditDestination {
    /// `-` is standard output; anything else a file.
    fn from(p: PathBuf) -> Self {
        if p.as_os_str() == "-" { Self::Stdout } else { Self::File(p) }
    }
}

/// When the writer calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before any event is acknowledged (requests wait for the disk; events
    /// arriving together share one sync).
    Always,
    /// Ticket events are written (so they survive the process) before the
    /// answer and synced within 1 s; administrative events are synced
    /// before the answer. The default.
    #[default]
    Interval,
}

/// An audit file, appended to under an exclusive lock (`flock`), so a
/// serving KDC and `kdc principal …` commands never interleave lines and
/// each continues the chain from the other's last line.
#[derive(Debug)]
pub(crate) struct AuditFile {
    path: PathBuf,
    file: File,
    /// Device and inode of `file`: when `path` names another file (it was
    /// rotated away), the next append opens the new one.
    identity: (u64, u64),
    /// The length after this handle's last append; another length means
    /// another process appended, and the tip is read again.
    len: u64,
    tip: Tip,
}

fn open_append(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

/// The tip of a file `len` bytes long: its last line's `seq` and `hash`.
/// Reads the end [`TAIL_WINDOW`] at a time, further back while the last
/// line has not started, up to the longest line `verify` accepts.
fn read_tip(file: &File, len: u64) -> Result<Tip, AuditError> {
    if len == 0 {
        return Ok(Tip::genesis());
    }
    // The last line, a newline before it and the one ending it.
    let most = MAX_VERIFY_LINE + 2;
    let mut window = TAIL_WINDOW;
    let last = loop {
        let size = window.min(len);
        let start = len - size;
        let mut buf = vec![0u8; usize::try_from(size).map_err(|_| AuditError::DamagedTail("unreadable end"))?];
        file.read_exact_at(&mut buf, start)?;
        let Some(body) = buf.strip_suffix(b"\n") else {
            return Err(AuditError::DamagedTail("the last line is incomplete"));
        };
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => break body.get(i + 1..).unwrap_or_default().to_vec(),
            None if start == 0 => break body.to_vec(),
            None if size >= most => return Err(AuditError::DamagedTail("the last line is longer than 1 MiB")),
            None => window = size.saturating_mul(4).min(most),
        }
    };
    let v: serde_json::Map<String, Value> =
        serde_json::from_slice(&last).map_err(|_| AuditError::DamagedTail("the last line is not JSON"))?;
    match (v.get("seq").and_then(Value::as_u64), v.get("hash").and_then(Value::as_str)) {
        // Only an edit makes a `seq` no line can follow.
        (Some(u64::MAX), Some(_)) => Err(AuditError::DamagedTail("the last line's seq is the largest there is")),
        (Some(seq), Some(hash)) if is_hash(hash) => Ok(Tip { seq, hash: hash.to_owned() }),
        _ => Err(AuditError::DamagedTail("the last line has no seq or hash")),
    }
}

impl AuditFile {
    /// Opens (creating, mode 0600) the file at `path` and reads where its
    /// chain ends. Fails when its last line is not an audit event.
    pub(crate) fn open(path: &Path) -> Result<Self, AuditError> {
        let (file, identity) = open_append(path)?;
        let mut f = Self { path: path.to_owned(), file, identity, len: 0, tip: Tip::genesis() };
        f.file.lock()?;
        let read = f.refresh();
        f.file.unlock()?;
        read?;
        Ok(f)
    }

    /// Reads the tip again if the file changed length since this handle
    /// last wrote. Call with the lock held.
    fn refresh(&mut self) -> Result<(), AuditError> {
        let len = self.file.metadata()?.len();
        if len != self.len || self.tip.seq == 0 {
            self.tip = read_tip(&self.file, len)?;
            self.len = len;
        }
        Ok(())
    }

    /// Opens the file now at `path` if it is not the one held (it was
    /// renamed or removed by log rotation): that file starts a new chain.
    fn follow_rotation(&mut self) -> Result<(), AuditError> {
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if current != Some(self.identity) {
            // What was written to the old file stays durable.
            self.file.sync_data()?;
            let (file, identity) = open_append(&self.path)?;
            *self = Self { path: self.path.clone(), file, identity, len: 0, tip: Tip::genesis() };
        }
        Ok(())
    }

    /// Appends `events` (each with its time) in one write, under the lock.
    /// On a failed write the file is cut back to where it was, so a partly
    /// written line never breaks the chain. Does not sync: see [`Self::sync`].
    pub(crate) fn append(&mut self, events: &[(AuditEvent, UnixMillis)]) -> Result<(), AuditError> {
        self.follow_rotation()?;
        self.file.lock()?;
        let result = self.append_locked(events);
        let unlocked = self.file.unlock();
        result?;
        Ok(unlocked?)
    }

    fn append_locked(&mut self, events: &[(AuditEvent, UnixMillis)]) -> Result<(), AuditError> {
        self.refresh()?;
        let mut tip = self.tip.clone();
        let mut buf = Vec::with_capacity(events.len() * 400);
        for (event, at) in events {
            buf.extend_from_slice(&seal_line(&mut tip, event, *at)?);
        }
        if let Err(e) = (&self.file).write_all(&buf) {
            let _ = self.file.set_len(self.len);
            return Err(e.into());
        }
        self.len += buf.len() as u64;
        self.tip = tip;
        Ok(())
    }

    /// `fdatasync`: what was appended is on disk when this returns.
    pub(crate) fn sync(&self) -> Result<(), AuditError> {
        Ok(self.file.sync_data()?)
    }
}

/// Where the writer puts lines: a file, or a stream (standard output) whose
/// chain starts at [`GENESIS`] with the process.
pub struct AuditSink(Sink);

enum Sink {
    File(AuditFile),
    Stream { out: Box<dyn Write + Send>, tip: Tip },
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Sink::File(file) => f.debug_tuple("AuditSink").field(&file.path).finish(),
            Sink::Stream { .. } => f.write_str("AuditSink(stream)"),
        }
    }
}

impl AuditSink {
    /// Opens `dest`: a file is created (0600) if needed and its tip read.
    pub fn open(dest: &AuditDestination) -> Result<Self, AuditError> {
        Ok(match dest {
            AuditDestination::Stdout => Self::stream(Box::new(std::io::stdout())),
            AuditDestination::File(path) => Self(Sink::File(AuditFile::open(path)?)),
        })
    }

    /// A sink writing to `out`, its chain starting at [`GENESIS`].
    pub fn stream(out: Box<dyn Write + Send>) -> Self {
        Self(Sink::Stream { out, tip: Tip::genesis() })
    }

    /// Appends `events` in order (see [`AuditFile::append`]).
    pub fn append(&mut self, events: &[(AuditEvent, UnixMillis)]) -> Result<(), AuditError> {
        match &mut self.0 {
            Sink::File(f) => f.append(events),
            Sink::Stream { out, tip } => {
                let mut next = tip.clone();
                let mut buf = Vec::new();
                for (event, at) in events {
                    buf.extend_from_slice(&seal_line(&mut next, event, *at)?);
                }
                // One write: lines are never split by other output.
                out.write_all(&buf)?;
                *tip = next;
                Ok(())
            }
        }
    }

    /// Makes what was appended durable (a file) or delivered (a stream: a
    /// flush, as pipes cannot be synced).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        match &mut self.0 {
            Sink::File(f) => f.sync(),
            Sink::Stream { out, .. } => Ok(out.flush()?),
        }
    }
}

/// Work for the writer thread.
enum Job {
    Event { event: Box<AuditEvent>, at: UnixMillis, done: tokio::sync::oneshot::Sender<Result<(), AuditError>> },
    Sync { done: tokio::sync::oneshot::Sender<Result<(), AuditError>> },
}

/// How much the writer may hold up, and be held up.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Jobs the queue holds.
    capacity: usize,
    /// Of those, the slots ticket events leave free for administrative ones.
    admin_reserve: usize,
    /// How long a ticket exchange waits for its event.
    ticket_wait: Duration,
    /// How long an administrative change waits for its event.
    admin_wait: Duration,
    /// How long one write or sync may take before the writer counts as stuck.
    stall_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            capacity: QUEUE_CAPACITY,
            admin_reserve: ADMIN_RESERVE,
            ticket_wait: TICKET_WAIT,
            admin_wait: ADMIN_WAIT,
            stall_after: STALL_AFTER,
        }
    }
}

/// Counters and state the writer and the handles share.
#[derive(Debug)]
struct Stats {
    written: AtomicU64,
    failed: AtomicU64,
    sync_failures: AtomicU64,
    dropped: AtomicU64,
    /// The last write or sync failed.
    failing: AtomicBool,
    /// Ticket events are being dropped (logged once per episode).
    dropping: AtomicBool,
    /// Jobs sent and not yet taken by the writer (at least the queue's length).
    queued: AtomicUsize,
    epoch: Instant,
    /// When the writer started the write or sync it is in (milliseconds
    /// since `epoch`, plus one); 0 between them.
    busy_since: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        Self {
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` (a write or a sync) as the writer's current operation.
    fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        self.busy_since.store(self.millis().saturating_add(1), Ordering::Relaxed);
        let result = f();
        self.busy_since.store(0, Ordering::Relaxed);
        result
    }

    /// Whether the writer has been in one write or sync for longer than `after`.
    fn stalled(&self, after: Duration) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        since != 0 && self.millis().saturating_add(1).saturating_sub(since) > after
    }
}

#[derive(Debug)]
struct Shared {
    jobs: mpsc::SyncSender<Job>,
    stats: Arc<Stats>,
    limits: Limits,
}

impl Shared {
    /// Queues `job` unless `limit` jobs are queued already (or the queue
    /// is full): never waits.
    fn enqueue(&self, job: Job, limit: usize) -> Result<(), AuditError> {
        let queued = &self.stats.queued;
        if queued.fetch_add(1, Ordering::AcqRel) >= limit {
            queued.fetch_sub(1, Ordering::AcqRel);
            return Err(AuditError::QueueFull);
        }
        self.jobs.try_send(job).map_err(|e| {
            queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::TrySendError::Full(_) => AuditError::QueueFull,
                mpsc::TrySendError::Disconnected(_) => AuditError::Stopped,
            }
        })
    }
}

/// Administrative changes running detached from their requests (see
/// [`AuditLog::change_started`]).
#[derive(Debug, Default)]
struct Changes {
    running: AtomicUsize,
    finished: tokio::sync::Notify,
}

/// An administrative change in progress: dropped when the change and its
/// event are done.
#[derive(Debug)]
#[must_use = "the change counts as running while this is held"]
pub struct ChangeInProgress(Arc<Changes>);

impl Drop for ChangeInProgress {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.finished.notify_waiters();
        }
    }
}

/// The serving KDC's handle on its audit trail: events go to one writer
/// thread, through a bounded queue, and the writer batches what arrives
/// together into one write and one sync. Cheap to clone.
/// [`AuditLog::disabled`] records nothing.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
    changes: Arc<Changes>,
}

impl AuditLog {
    /// No audit trail: every call succeeds and nothing is written.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Opens `dest` (failing now, not at the first event, if it cannot be
    /// opened or its last line is damaged) and starts the writer thread.
    pub fn start(dest: &AuditDestination, policy: FsyncPolicy) -> Result<Self, AuditError> {
        Self::with_sink(AuditSink::open(dest)?, policy)
    }

    /// Starts a writer thread over `sink`.
    pub fn with_sink(sink: AuditSink, policy: FsyncPolicy) -> Result<Self, AuditError> {
        Self::with_limits(sink, policy, Limits::default())
    }

    fn with_limits(sink: AuditSink, policy: FsyncPolicy, limits: Limits) -> Result<Self, AuditError> {
        let (jobs, rx) = mpsc::sync_channel(limits.capacity);
        let stats = Arc::new(Stats::new());
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("kdc-audit".to_owned())
            .spawn(move || run_writer(sink, &rx, policy, &writer_stats))?;
        Ok(Self { shared: Some(Arc::new(Shared { jobs, stats, limits })), changes: Arc::default() })
    }

    /// Whether events are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Writes `event`, dated `at`, and returns once it is written (and
    /// synced, as the policy says), within bounds: a stuck disk must not
    /// stall ticket issuance, nor the queue grow without limit.
    ///
    /// - A ticket event is queued without waiting, and dropped (counted,
    ///   [`AuditError::QueueFull`]) when the queue is full; the exchange then
    ///   waits for it at most [`TICKET_WAIT`] ([`AuditError::TimedOut`]: it
    ///   stays queued), and not at all while the writer is stuck
    ///   ([`STALL_AFTER`]).
    /// - An administrative event has [`ADMIN_RESERVE`] slots of the queue
    ///   that ticket events leave free, and waits at most [`ADMIN_WAIT`]:
    ///   its change answers `503` on any error.
    pub async fn record(&self, event: AuditEvent, at: UnixMillis) -> Result<(), AuditError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let (limits, stats) = (&shared.limits, &shared.stats);
        let ticket = event.kind().is_ticket();
        let (done, wait) = tokio::sync::oneshot::channel();
        let job = Job::Event { event: Box::new(event), at, done };
        let wait_for = if ticket {
            match shared.enqueue(job, limits.capacity.saturating_sub(limits.admin_reserve)) {
                Ok(()) => {
                    if stats.dropping.load(Ordering::Relaxed) && stats.dropping.swap(false, Ordering::Relaxed) {
                        tracing::warn!("the audit queue has room again");
                    }
                }
                Err(e) => {
                    if matches!(e, AuditError::QueueFull) {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        if !stats.dropping.swap(true, Ordering::Relaxed) {
                            tracing::error!(
                                "the audit queue is full: ticket events are dropped until the audit writer catches up"
                            );
                        }
                    }
                    return Err(e);
                }
            }
            if stats.stalled(limits.stall_after) {
                return Err(AuditError::TimedOut);
            }
            limits.ticket_wait
        } else {
            shared.enqueue(job, limits.capacity)?;
            limits.admin_wait
        };
        match tokio::time::timeout(wait_for, wait).await {
            Ok(answer) => answer.map_err(|_| AuditError::Stopped)?,
            Err(_) => Err(AuditError::TimedOut),
        }
    }

    /// `Err` while the last write failed, while the writer is stuck in one
    /// write or sync ([`STALL_AFTER`]), or while the queue is as full as
    /// ticket events may make it: administrative changes are refused then
    /// rather than made unrecorded.
    pub fn check(&self) -> Result<(), AuditError> {
        let Some(s) = &self.shared else { return Ok(()) };
        let full = s.stats.queued.load(Ordering::Relaxed) >= s.limits.capacity.saturating_sub(s.limits.admin_reserve);
        if s.stats.failing.load(Ordering::Relaxed) || s.stats.stalled(s.limits.stall_after) || full {
            return Err(AuditError::Unavailable);
        }
        Ok(())
    }

    /// Counts an administrative change as running until the value returned
    /// is dropped. The admin API runs each change and its event in a task
    /// detached from the request, so a dropped request cannot leave a change
    /// unrecorded; at shutdown [`Self::changes_finished`] waits for them.
    pub fn change_started(&self) -> ChangeInProgress {
        self.changes.running.fetch_add(1, Ordering::AcqRel);
        ChangeInProgress(self.changes.clone())
    }

    /// Returns once no administrative change is running (at shutdown, after
    /// the server stopped taking requests, before [`Self::flush`]).
    pub async fn changes_finished(&self) {
        loop {
            let finished = self.changes.finished.notified();
            tokio::pin!(finished);
            // Registered before the count is read, so a change ending in
            // between still wakes this.
            finished.as_mut().enable();
            if self.changes.running.load(Ordering::Acquire) == 0 {
                return;
            }
            finished.await;
        }
    }

    /// Syncs everything written so far (at shutdown), waiting at most
    /// [`ADMIN_WAIT`] for a stuck writer.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let (done, wait) = tokio::sync::oneshot::channel();
        shared.enqueue(Job::Sync { done }, shared.limits.capacity)?;
        match tokio::time::timeout(shared.limits.admin_wait, wait).await {
            Ok(answer) => answer.map_err(|_| AuditError::Stopped)?,
            Err(_) => Err(AuditError::TimedOut),
        }
    }

    /// A snapshot of the audit counters (for `GET /metrics`); all zero when
    /// auditing is off.
    pub fn stats(&self) -> AuditStats {
        let Some(shared) = &self.shared else { return AuditStats::default() };
        let s = &shared.stats;
        AuditStats {
            written: s.written.load(Ordering::Relaxed),
            write_failures: s.failed.load(Ordering::Relaxed),
            sync_failures: s.sync_failures.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed) as u64,
            stalled: s.stalled(shared.limits.stall_after),
        }
    }
}

/// A snapshot of an [`AuditLog`]'s counters ([`AuditLog::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Events written since start.
    pub written: u64,
    /// Events that could not be written.
    pub write_failures: u64,
    /// Syncs to disk that failed.
    pub sync_failures: u64,
    /// Ticket events dropped because the queue was full.
    pub dropped: u64,
    /// Events waiting for the writer.
    pub queued: u64,
    /// The writer has been stuck in one write or sync for too long.
    pub stalled: bool,
}

/// The writer thread: takes what is queued (up to [`MAX_BATCH`]), writes it
/// in one append, syncs as the policy says, then answers each waiter.
fn run_writer(mut sink: AuditSink, jobs: &mpsc::Receiver<Job>, policy: FsyncPolicy, stats: &Stats) {
    let mut dirty = false;
    // The last sync, or failed attempt: a failing sync is retried once per
    // interval, not in a loop.
    let mut last_sync = Instant::now();
    loop {
        let first = if dirty {
            match jobs.recv_timeout(SYNC_INTERVAL.saturating_sub(last_sync.elapsed())) {
                Ok(j) => Some(j),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(j) => Some(j),
                Err(_) => break,
            }
        };
        let mut batch: Vec<Job> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        stats.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let mut events = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        let mut sync_now = policy == FsyncPolicy::Always || last_sync.elapsed() >= SYNC_INTERVAL;
        for job in batch {
            match job {
                Job::Event { event, at, done } => {
                    sync_now |= event.kind().always_synced();
                    events.push((*event, at));
                    waiters.push(done);
                }
                Job::Sync { done } => {
                    sync_now = true;
                    waiters.push(done);
                }
            }
        }
        let n = events.len() as u64;
        let mut result = if events.is_empty() { Ok(()) } else { stats.busy(|| sink.append(&events)) };
        match &result {
            // Written (a crash of the process no longer loses them), whatever
            // the sync below does.
            Ok(()) if n > 0 => {
                stats.written.fetch_add(n, Ordering::Relaxed);
                dirty = true;
            }
            Ok(()) => {}
            Err(_) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
            }
        }
        if result.is_ok() && dirty && sync_now {
            result = stats.busy(|| sink.sync());
            last_sync = Instant::now();
            match result {
                Ok(()) => dirty = false,
                Err(_) => {
                    stats.sync_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        match &result {
            Ok(()) => {
                if stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!("the audit log is written again");
                }
            }
            Err(e) => {
                // Once per outage, not once per event.
                if !stats.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "writing the audit log failed; administrative changes are refused until it works");
                }
            }
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
    if dirty {
        let _ = sink.sync();
    }
}

/// What an intact file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Events (lines).
    pub events: u64,
    /// The last line's hash ([`GENESIS`] for an empty file): keep it
    /// elsewhere, and a later check shows whether the file was cut back.
    pub last_hash: String,
}

/// Why a file does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The first line that breaks the chain, counted from 1.
    #[error("line {line}: {reason}")]
    Broken {
        /// Line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Checks one line against the chain so far; returns the new tip.
fn check_line(line: &[u8], expected: &Tip) -> Result<Tip, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8 (edited, or cut short)".to_owned())?;
    let v: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|_| "not a JSON object (edited, or cut short)".to_owned())?;
    let split = text.len().checked_sub(HASH_SUFFIX_LEN).filter(|&i| text.is_char_boundary(i));
    let (body, suffix) = split.map(|i| text.split_at(i)).ok_or("does not end with its hash")?;
    let stated = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| is_hash(h))
        .ok_or("does not end with its hash")?;
    let computed = hex(&Sha256::new_with_prefix(body.as_bytes()).chain_update(b"}").finalize());
    if computed != stated {
        return Err("its content does not match its hash: the line was edited".to_owned());
    }
    let seq = v.get("seq").and_then(Value::as_u64).ok_or("has no seq")?;
    let due = expected.seq.checked_add(1).ok_or("follows a line whose seq is the largest there is")?;
    if seq > due {
        let missing = seq - due;
        return Err(format!("seq is {seq} where {due} was due: {missing} event(s) before it were deleted"));
    }
    if seq < due {
        return Err(format!("seq is {seq} where {due} was due: a line was repeated or inserted"));
    }
    let prev = v.get("prev").and_then(Value::as_str).ok_or("has no prev")?;
    if prev != expected.hash {
        return Err(if expected.seq == 0 {
            "prev is not the genesis value (64 zeros)".to_owned()
        } else {
            "prev does not match the previous line's hash: a line before it was removed, inserted or rewritten"
                .to_owned()
        });
    }
    Ok(Tip { seq, hash: stated.to_owned() })
}

/// Checks a whole audit file: every line is a JSON event whose hash matches
/// its content, whose `seq` follows the line before, and whose `prev` is
/// that line's hash (the first: [`GENESIS`], `seq` 1). Stops at the first
/// line that breaks the chain.
pub fn verify(mut reader: impl BufRead) -> Result<VerifySummary, VerifyError> {
    let mut tip = Tip::genesis();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_VERIFY_LINE + 1).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        number += 1;
        let broken = |reason: String| VerifyError::Broken { line: number, reason };
        let Some(content) = line.strip_suffix(b"\n") else {
            if read as u64 > MAX_VERIFY_LINE {
                return Err(broken("longer than 1 MiB: not an audit event".to_owned()));
            }
            // Check what is there first: an edit is the better diagnosis.
            check_line(&line, &tip).map_err(broken)?;
            return Err(broken("no end of line: the last write was cut short".to_owned()));
        };
        tip = check_line(content, &tip).map_err(broken)?;
    }
    Ok(VerifySummary { events: tip.seq, last_hash: tip.hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_events_recorded_to_a_file_verify_as_a_chain() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.log");
        let mut sink = AuditSink::open(&path.clone().into())?;
        let created =
            AuditEvent::new(EventKind::PrincipalCreated, Outcome::Success).actor("cli").target("alice@EXAMPLE.TEST");
        let rotated =
            AuditEvent::new(EventKind::PrincipalRotated, Outcome::Success).actor("cli").target("alice@EXAMPLE.TEST");
        sink.append(&[(created, UnixMillis(1_700_000_000_000)), (rotated, UnixMillis(1_700_000_000_500))])?;
        sink.sync()?;
        let summary = verify(std::io::BufReader::new(File::open(&path)?))?;
        assert_eq!(summary.events, 2);
        Ok(())
    }

    fn event(n: u32) -> (AuditEvent, UnixMillis) {
        let e = AuditEvent::new(EventKind::TicketIssued, Outcome::Success)
            .actor("alice@EXAMPLE.TEST")
            .service("krbtgt/EXAMPLE.TEST@EXAMPLE.TEST")
            .exchange(Exchange::Initial)
            .request(&format!("req-{n}"), Some("192.0.2.7".parse().unwrap()));
        (e, UnixMillis(1_700_000_000_000 + u64::from(n)))
    }

    fn write(path: &Path, n: u32) {
        let mut f = AuditFile::open(path).unwrap();
        let events: Vec<_> = (1..=n).map(event).collect();
        f.append(&events).unwrap();
        f.sync().unwrap();
    }

    fn verify_file(path: &Path) -> Result<VerifySummary, VerifyError> {
        verify(std::io::BufReader::new(File::open(path).unwrap()))
    }

    fn broken_line(r: Result<VerifySummary, VerifyError>) -> (u64, String) {
        match r {
            Err(VerifyError::Broken { line, reason }) => (line, reason),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UnixMillis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UnixMillis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(UnixMillis(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(UnixMillis(4_102_444_799_999)), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_line_is_json_whose_hash_covers_everything_but_itself() {
        let mut tip = Tip::genesis();
        let (e, at) = event(1);
        let line = String::from_utf8(seal_line(&mut tip, &e, at).unwrap()).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["event"], "ticket.issued");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.001Z");
        assert_eq!(v["address"], "192.0.2.7");
        assert_eq!(v["hash"], tip.hash.as_str());
        let body = line.trim_end().replace(&format!(",\"hash\":\"{}\"", tip.hash), "");
        assert_eq!(hex(&Sha256::digest(body.as_bytes())), tip.hash);
        assert!(line.starts_with("{\"seq\":1,\"ts\":"), "{line}");
    }

    #[test]
    fn an_intact_file_verifies_and_an_empty_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 5);
        let s = verify_file(&path).unwrap();
        assert_eq!(s.events, 5);
        assert_eq!(s.last_hash, serde_json::from_str::<Value>(&lines(&path)[4]).unwrap()["hash"]);
        std::fs::write(&path, "").unwrap();
        assert_eq!(verify_file(&path).unwrap(), VerifySummary { events: 0, last_hash: GENESIS.to_owned() });
    }

    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 1);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn an_edit_anywhere_is_caught_at_that_line_even_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for target in [0usize, 2, 4] {
            std::fs::remove_file(&path).ok();
            write(&path, 5);
            let mut l = lines(&path);
            l[target] = l[target].replace("alice", "mallory");
            rewrite(&path, &l);
            let (line, why) = broken_line(verify_file(&path));
            assert_eq!(line, target as u64 + 1);
            assert!(why.contains("edited"), "{why}");
        }
    }

    #[test]
    fn an_edit_with_its_hash_recomputed_is_caught_at_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 4);
        let mut l = lines(&path);
        // Re-seal the edited line the way the writer does.
        let body = format!("{}}}", &l[1][..l[1].len() - HASH_SUFFIX_LEN]).replace("alice", "mallory");
        let hash = hex(&Sha256::digest(body.as_bytes()));
        l[1] = format!("{},\"hash\":\"{hash}\"}}", body.strip_suffix('}').unwrap());
        rewrite(&path, &l);
        let (line, why) = broken_line(verify_file(&path));
        assert_eq!(line, 3, "{why}");
        assert!(why.contains("prev does not match"), "{why}");
    }

    #[test]
    fn a_deleted_line_is_caught_at_the_line_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 5);
        let mut l = lines(&path);
        l.remove(2);
        rewrite(&path, &l);
        let (line, why) = broken_line(verify_file(&path));
        assert_eq!(line, 3);
        assert!(why.contains("1 event(s) before it were deleted"), "{why}");
        // The first line deleted: the new first line does not start the chain.
        let mut l = lines(&path);
        l.remove(0);
        rewrite(&path, &l);
        assert_eq!(broken_line(verify_file(&path)).0, 1);
    }

    #[test]
    fn a_cut_short_or_foreign_line_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 3);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 20]).unwrap();
        let (line, why) = broken_line(verify_file(&path));
        assert_eq!(line, 3);
        assert!(why.contains("cut short"), "{why}");
        // Only the final newline missing.
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        assert!(broken_line(verify_file(&path)).1.contains("no end of line"));
        // A line that is JSON but no event; a duplicated line.
        let mut l = lines(&path);
        l.insert(1, "{\"event\":\"ticket.issued\"}".to_owned());
        rewrite(&path, &l);
        assert_eq!(broken_line(verify_file(&path)).0, 2);
        let mut l = lines(&path);
        l.remove(1);
        l.insert(1, l[0].clone());
        rewrite(&path, &l);
        let (line, why) = broken_line(verify_file(&path));
        assert_eq!(line, 2);
        assert!(why.contains("repeated or inserted"), "{why}");
    }

    #[test]
    fn two_writers_continue_each_others_chain() {
        // A serving KDC and a `kdc principal …` command: two handles on one file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut a = AuditFile::open(&path).unwrap();
        let mut b = AuditFile::open(&path).unwrap();
        for n in 0..6 {
            let w = if n % 2 == 0 { &mut a } else { &mut b };
            w.append(&[event(n), event(n + 100)]).unwrap();
        }
        assert_eq!(verify_file(&path).unwrap().events, 12);
        // And a handle opened later starts where they stopped.
        let mut c = AuditFile::open(&path).unwrap();
        c.append(&[event(7)]).unwrap();
        assert_eq!(verify_file(&path).unwrap().events, 13);
    }

    #[test]
    fn concurrent_writers_in_threads_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut f = AuditFile::open(&path).unwrap();
                    for n in 0..50 {
                        f.append(&[event(t * 1000 + n)]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(verify_file(&path).unwrap().events, 200);
    }

    #[test]
    fn a_rotated_file_is_followed_and_starts_a_new_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = AuditFile::open(&path).unwrap();
        f.append(&[event(1), event(2)]).unwrap();
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        f.append(&[event(3)]).unwrap();
        assert_eq!(verify_file(&dir.path().join("audit.log.1")).unwrap().events, 2);
        assert_eq!(verify_file(&path).unwrap().events, 1);
    }

    #[test]
    fn a_damaged_last_line_is_refused_rather_than_chained_onto() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 2);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":3,");
        std::fs::write(&path, &text).unwrap();
        assert!(matches!(AuditFile::open(&path), Err(AuditError::DamagedTail(_))));
    }

    /// A line sealed by hand after the last one of `path`, its `target`
    /// `target_len` bytes long (as an older KDC could write one).
    fn append_sealed_by_hand(path: &Path, target_len: usize) {
        let tip = read_tip(&File::open(path).unwrap(), std::fs::metadata(path).unwrap().len()).unwrap();
        let body = format!(
            "{{\"seq\":{},\"ts\":\"2023-11-14T22:13:20.000Z\",\"event\":\"principal.deleted\",\"outcome\":\"refused\",\
             \"target\":\"{}\",\"prev\":\"{}\"}}",
            tip.seq + 1,
            "a".repeat(target_len),
            tip.hash
        );
        let hash = hex(&Sha256::digest(body.as_bytes()));
        let line = format!("{},\"hash\":\"{hash}\"}}\n", body.strip_suffix('}').unwrap());
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn a_last_line_longer_than_the_tail_window_is_read_back_up_to_1_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 2);
        append_sealed_by_hand(&path, 300 * 1024);
        let mut f = AuditFile::open(&path).unwrap();
        f.append(&[event(4)]).unwrap();
        assert_eq!(verify_file(&path).unwrap().events, 4);
        // Past what `verify` accepts as a line, the end is refused, named.
        append_sealed_by_hand(&path, 1024 * 1024);
        assert!(matches!(AuditFile::open(&path), Err(AuditError::DamagedTail(why)) if why.contains("1 MiB")));
    }

    #[test]
    fn a_last_seq_that_cannot_be_followed_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let body = format!("{{\"seq\":{},\"event\":\"ticket.issued\",\"prev\":\"{GENESIS}\"}}", u64::MAX);
        let hash = hex(&Sha256::digest(body.as_bytes()));
        std::fs::write(&path, format!("{},\"hash\":\"{hash}\"}}\n", body.strip_suffix('}').unwrap())).unwrap();
        assert!(matches!(AuditFile::open(&path), Err(AuditError::DamagedTail(_))));
        let mut tip = Tip { seq: u64::MAX, hash: GENESIS.to_owned() };
        assert!(seal_line(&mut tip, &event(1).0, UnixMillis(0)).is_err());
        assert_eq!(tip.seq, u64::MAX, "the tip is left as it was");
    }

    #[test]
    fn an_event_is_cut_to_fit_a_bounded_line() {
        let mut tip = Tip::genesis();
        // A name as long as a refused request can make it: cut, marked.
        let e = AuditEvent::new(EventKind::PrincipalDeleted, Outcome::Refused).target("é".repeat(50_000));
        let line = seal_line(&mut tip, &e, UnixMillis(0)).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        let target = v["target"].as_str().unwrap();
        assert!(target.len() <= MAX_NAME_LEN + '…'.len_utf8() && target.ends_with("é…"), "{}", target.len());
        // Details too large for a line: left out, and said so.
        let roles: Vec<String> = (0..1000).map(|n| format!("role-{n:0>60}")).collect();
        let e = AuditEvent::new(EventKind::PrincipalCreated, Outcome::Success)
            .target("bob@EXAMPLE.TEST")
            .changes(serde_json::json!({ "roles": roles }))
            .kvnos((1..=5).map(Kvno).collect());
        let line = seal_line(&mut tip, &e, UnixMillis(0)).unwrap();
        assert!(line.len() <= MAX_LINE_LEN, "{}", line.len());
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!((v["truncated"].as_bool(), v.get("changes"), v.get("kvnos")), (Some(true), None, None), "{v}");
        assert_eq!(v["target"], "bob@EXAMPLE.TEST");
        let alone = seal_line(&mut Tip::genesis(), &e, UnixMillis(0)).unwrap();
        assert_eq!(verify(&alone[..]).unwrap().events, 1, "a cut line verifies");
        // The largest real event fits whole.
        let roles: Vec<String> = (0..kdc_proto::limits::MAX_ROLES).map(|n| format!("{n:x>64}")).collect();
        let e = AuditEvent::new(EventKind::PrincipalCreated, Outcome::Success)
            .actor("a".repeat(MAX_NAME_LEN))
            .target("b".repeat(MAX_NAME_LEN))
            .changes(serde_json::json!({ "kind": "user", "roles": roles, "max_life_secs": u64::MAX, "max_renew_secs": u64::MAX }))
            .request(&"r".repeat(64), Some("2001:db8::1".parse().unwrap()));
        let v: Value = serde_json::from_slice(&seal_line(&mut tip, &e, UnixMillis(u64::MAX / 2)).unwrap()).unwrap();
        assert!(v.get("truncated").is_none() && v["changes"]["roles"].as_array().unwrap().len() == 64);
    }

    #[test]
    fn a_stream_sink_chains_from_genesis() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let mut sink = AuditSink::stream(Box::new(out.clone()));
        sink.append(&[event(1)]).unwrap();
        sink.append(&[event(2), event(3)]).unwrap();
        let bytes = out.0.lock().unwrap().clone();
        assert_eq!(verify(&bytes[..]).unwrap().events, 3);
    }

    #[tokio::test]
    async fn the_writer_thread_records_in_order_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for policy in [FsyncPolicy::Always, FsyncPolicy::Interval] {
            std::fs::remove_file(&path).ok();
            let log = AuditLog::start(&AuditDestination::File(path.clone()), policy).unwrap();
            let mut tasks = Vec::new();
            for n in 0..20 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let (e, at) = event(n);
                    log.record(e, at).await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            log.flush().await.unwrap();
            assert_eq!(verify_file(&path).unwrap().events, 20);
            assert!(log.check().is_ok());
            assert_eq!(log.stats().written, 20);
        }
        let off = AuditLog::disabled();
        assert!(!off.is_enabled());
        off.record(event(1).0, UnixMillis(0)).await.unwrap();
    }

    /// A stream whose writes block until it is released: a hung disk (an
    /// `fdatasync` or a `flock` that does not return).
    #[derive(Clone, Default)]
    struct Stuck {
        released: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
        out: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Stuck {
        fn release(&self) {
            *self.released.0.lock().unwrap() = true;
            self.released.1.notify_all();
        }
    }

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.released;
            let _released = cvar.wait_while(lock.lock().unwrap(), |released| !*released).unwrap();
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_writer_holds_ticket_events_back_briefly_and_the_queue_is_bounded() {
        let stuck = Stuck::default();
        let log = AuditLog::with_sink(AuditSink::stream(Box::new(stuck.clone())), FsyncPolicy::Always).unwrap();
        // The writer takes the first event and hangs writing it: the
        // exchange waits a moment, not until the disk answers.
        let started = Instant::now();
        let first = tokio::time::timeout(Duration::from_secs(5), log.record(event(0).0, event(0).1)).await;
        assert!(matches!(first, Ok(Err(AuditError::TimedOut))), "{first:?}");
        assert!(started.elapsed() < TICKET_WAIT + Duration::from_millis(500));
        // Stuck for longer than STALL_AFTER: administrative changes are
        // refused before they are made, exchanges no longer wait at all,
        // and what does not fit in the queue is dropped and counted.
        tokio::time::sleep(STALL_AFTER.saturating_sub(started.elapsed()) + Duration::from_millis(100)).await;
        assert!(matches!(log.check(), Err(AuditError::Unavailable)));
        let room = QUEUE_CAPACITY - ADMIN_RESERVE;
        let started = Instant::now();
        for n in 1..=room + 10 {
            let (e, at) = event(u32::try_from(n).unwrap());
            let r = log.record(e, at).await;
            assert!(r.is_err(), "{r:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(2), "exchanges waited for a stuck writer");
        assert_eq!(log.stats().dropped, 10);
        assert_eq!(log.stats().queued, room as u64);
        assert!(log.stats().stalled);
        // The disk answers again: everything queued is written in order.
        stuck.release();
        tokio::time::timeout(Duration::from_secs(10), log.flush()).await.unwrap().unwrap();
        let written = stuck.out.lock().unwrap().clone();
        assert_eq!(verify(&written[..]).unwrap().events, room as u64 + 1);
        assert_eq!(log.stats().written, room as u64 + 1);
        assert!(!log.stats().stalled);
        assert!(log.check().is_ok());
    }

    #[tokio::test]
    async fn administrative_events_have_room_in_a_full_queue_and_wait_a_bounded_time() {
        let stuck = Stuck::default();
        let limits = Limits {
            capacity: 8,
            admin_reserve: 2,
            ticket_wait: Duration::from_millis(20),
            admin_wait: Duration::from_millis(200),
            stall_after: Duration::from_secs(600),
        };
        let log =
            AuditLog::with_limits(AuditSink::stream(Box::new(stuck.clone())), FsyncPolicy::Interval, limits).unwrap();
        assert!(matches!(log.record(event(0).0, event(0).1).await, Err(AuditError::TimedOut)));
        // The writer holds the first event; six more fill the tickets' share.
        while log.stats().queued > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for n in 1..=6 {
            assert!(matches!(log.record(event(n).0, event(n).1).await, Err(AuditError::TimedOut)));
        }
        assert!(matches!(log.record(event(7).0, event(7).1).await, Err(AuditError::QueueFull)));
        assert!(matches!(log.check(), Err(AuditError::Unavailable)), "admin changes wait for room");
        let admin =
            AuditEvent::new(EventKind::PrincipalDeleted, Outcome::Success).actor("cli").target("x@EXAMPLE.TEST");
        let started = Instant::now();
        assert!(matches!(log.record(admin, UnixMillis(1)).await, Err(AuditError::TimedOut)), "queued, not dropped");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(log.stats().dropped, 1);
        stuck.release();
        log.flush().await.unwrap();
        let written = String::from_utf8(stuck.out.lock().unwrap().clone()).unwrap();
        assert_eq!(verify(written.as_bytes()).unwrap().events, 8);
        assert!(written.lines().last().unwrap().contains("principal.deleted"), "{written}");
        assert!(log.check().is_ok());
    }

    #[tokio::test]
    async fn events_written_but_not_synced_count_as_written_and_the_sync_as_failed() {
        /// Takes every write; fails every flush (a stream's sync).
        struct Unsyncable(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Unsyncable {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("flush failed"))
            }
        }
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log =
            AuditLog::with_sink(AuditSink::stream(Box::new(Unsyncable(out.clone()))), FsyncPolicy::Always).unwrap();
        let admin =
            AuditEvent::new(EventKind::PrincipalDeleted, Outcome::Success).actor("cli").target("x@EXAMPLE.TEST");
        assert!(log.record(admin, UnixMillis(1)).await.is_err(), "not durable: the change must hear of it");
        assert_eq!(log.stats().written, 1);
        assert_eq!(log.stats().write_failures, 0);
        assert_eq!(log.stats().sync_failures, 1);
        assert!(log.check().is_err());
        assert_eq!(verify(&out.lock().unwrap()[..]).unwrap().events, 1);
    }

    #[tokio::test]
    async fn changes_finished_waits_for_every_running_change() {
        let log = AuditLog::disabled();
        log.changes_finished().await;
        let (first, second) = (log.change_started(), log.change_started());
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.changes_finished().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one change is still running");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }

    #[test]
    fn events_have_no_place_for_secrets() {
        // Everything an event can hold, set: the only free-form field is
        // `changes`, which the callers fill with names, roles and lifetimes.
        let e = AuditEvent::new(EventKind::PrincipalRotated, Outcome::Success)
            .actor("admin@EXAMPLE.TEST")
            .target("HTTP/a.example.test@EXAMPLE.TEST")
            .kvno(Kvno(2));
        let v = serde_json::to_value(&e).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["actor", "event", "kvno", "outcome", "target"]);
    }
}

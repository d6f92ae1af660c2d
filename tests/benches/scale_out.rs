//! Scale-out figures (issue 9), each comparison measured in one run with one
//! load generator:
//!
//! 1. service-ticket (TGS, `POST /tickets`) throughput of the release `kdc`
//!    on SQLite, on PostgreSQL (without and with the Redis replay cache), and
//!    as two processes on one PostgreSQL database with the load split
//!    round-robin across them (with the shared Redis replay cache, as a fleet
//!    runs, and without it), with the CPU each ticket costs the KDC
//!    processes, the PostgreSQL backends and Redis;
//! 2. validated requests/s through `TicketAuthLayer` with the in-memory and
//!    with the Redis replay cache, beside the same handler bare.
//!
//! `cargo build --release -p kdc-server && cargo bench -p kdc-e2e --bench scale_out [-- SECONDS]`
//!
//! SECONDS (default 6) is the measured time of each configuration, taken as
//! three rounds that alternate across the configurations (so drift on a
//! shared machine hits all alike) after a 1 s warm-up each; the figures are
//! median rounds, the CPU costs totals over the three rounds.
//!
//! The load: 32 tokio tasks on kept-alive reqwest connections, each request
//! with a fresh authenticator (and, for TGS, a fresh nonce), every reply
//! checked: a service ticket must come back `200` and open under the TGT's
//! session key; a service reply must be `200` with the expected body (and
//! `Authentication-Info` behind the layer). Any failure fails the bench.
//!
//! Needs the release `kdc` (`KDC_BIN`, else `target/release/kdc` beside this
//! bench), PostgreSQL (`KDC_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; a database of its own is
//! created and dropped) and Redis (`KDC_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; the realm and namespace are unique to the run and
//! their keys are removed at the end), plus `psql` and `redis-cli`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auth_middleware::{RedisReplayConfig, ReplayCache, connect_redis_replay_cache};
use axum::routing::get;
use kdc_e2e::{ADMIN_PW, ALICE_PW, Credentials, KdcProcess, ProtoClient, SVC_A, TestKdc, TestService};
use kdc_e2e::{ap_authorization, kdc_command, now};

/// Concurrent clients, each one request in flight at a time.
const CLIENTS: usize = 32;
/// Measured rounds per configuration.
const ROUNDS: usize = 3;
/// Unmeasured load before the first round of each configuration (connection
/// pools, caches, PostgreSQL plans).
const WARM_UP: Duration = Duration::from_secs(1);
/// Client principals the TGS load is spread over: the KDC refuses (`503`)
/// a principal's authenticators beyond 100 000 within a skew window, which
/// one client would reach in a long run.
const USERS: usize = 4;
/// What the hello handler answers alice.
const HELLO: &str = "hello, alice@EXAMPLE.TEST";

/// What one stream of requests drives.
enum Load {
    /// Service tickets for `service`, the i-th request to `kdcs[i % len]`
    /// (round-robin across instances), from the TGTs in turn.
    Tgs { kdcs: Vec<ProtoClient>, tgts: Vec<Credentials>, service: String },
    /// `GET /hello` at `url` with a fresh authenticator from `creds`.
    Hello { http: reqwest::Client, url: String, creds: Box<Credentials>, mutual: bool },
}

impl Load {
    /// One request, checked.
    async fn one(&self, n: u64) -> Result<(), String> {
        match self {
            Load::Tgs { kdcs, tgts, service } => {
                let kdc = &kdcs[(n % kdcs.len() as u64) as usize];
                let tgt = &tgts[(n / kdcs.len() as u64 % tgts.len() as u64) as usize];
                let req = ProtoClient::tgs_request(tgt, service, now()).map_err(|e| format!("{e:#}"))?;
                // `tgs` opens the reply (nonce, service, times) under the TGT's session key.
                match kdc.tgs(tgt, &req).await {
                    Ok(Ok(_ticket)) => Ok(()),
                    Ok(Err(refusal)) => Err(format!("{} {}", refusal.status, refusal.body)),
                    Err(e) => Err(format!("{e:#}")),
                }
            }
            Load::Hello { http, url, creds, mutual } => {
                let (authz, _) = ap_authorization(creds, "GET", url, None, now());
                let r = http.get(url).header("authorization", authz).send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                let has_mutual = r.headers().contains_key(auth_middleware::AUTHENTICATION_INFO);
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                if status != 200 || body != HELLO.as_bytes() {
                    return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
                }
                if *mutual && !has_mutual {
                    return Err("200 without Authentication-Info".to_owned());
                }
                Ok(())
            }
        }
    }
}

/// What one timed stream of requests gave.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    elapsed: Duration,
}

/// Runs `load` from `CLIENTS` tasks for `length` (requests in flight at the
/// end are finished and counted, over the time they took).
async fn drive(load: &Arc<Load>, length: Duration) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (load, next) = (load.clone(), next.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline {
                    match load.one(next.fetch_add(1, Ordering::Relaxed)).await {
                        Ok(()) => t.ok += 1,
                        Err(e) => {
                            t.failed += 1;
                            t.first_failure.get_or_insert(e);
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.unwrap();
        total.ok += t.ok;
        total.failed += t.failed;
        if total.first_failure.is_none() {
            total.first_failure = t.first_failure;
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Clock ticks per second of `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) process `pid` has used, 0 if it is gone.
fn cpu_secs(pid: u32, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / ticks
}

/// Runs `psql URL -c SQL`, returning its output (unaligned, tuples only).
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A database of the run's own, dropped with this.
struct Database {
    server: String,
    name: String,
    url: String,
}

impl Database {
    fn create(server: &str, name: &str) -> Self {
        psql(server, &format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create a database on {server} (PostgreSQL running?): {e}"));
        Self {
            server: server.to_owned(),
            name: name.to_owned(),
            url: kdc_e2e::postgres_url_with_database(server, name),
        }
    }

    /// The server processes serving this database now, with the CPU each
    /// has used.
    fn backends(&self, ticks: f64) -> HashMap<u32, f64> {
        let sql = format!("SELECT pid FROM pg_stat_activity WHERE datname = '{}'", self.name);
        psql(&self.server, &sql)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(|pid| (pid, cpu_secs(pid, ticks)))
            .collect()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(&self.server, &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
    }
}

/// Runs `redis-cli -u URL ARGS`.
fn redis_cli(url: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli").args(["-u", url]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU seconds the Redis server has used (`INFO cpu`), if it can be asked.
fn redis_cpu_secs(url: &str) -> Option<f64> {
    let info = redis_cli(url, &["info", "cpu"])?;
    let field =
        |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok());
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// Removes the run's keys (`*ID*`) from Redis; they would expire within
/// twice the skew anyway.
fn redis_cleanup(url: &str, id: &str) {
    let Some(keys) = redis_cli(url, &["--scan", "--pattern", &format!("*{id}*")]) else { return };
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    for chunk in keys.chunks(500) {
        let mut args = vec!["unlink"];
        args.extend_from_slice(chunk);
        let _ = redis_cli(url, &args);
    }
}

/// The release `kdc`: `KDC_BIN`, else `kdc` in the profile directory this
/// bench runs from (`target/release/deps/..`).
fn kdc_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KDC_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("kdc")).unwrap();
    assert!(bin.exists(), "no {}: run `cargo build --release -p kdc-server` first, or set KDC_BIN", bin.display());
    bin
}

/// A realm in `data` (its principals in PostgreSQL at `db` when given, else
/// in SQLite there): users `user0`.. (alice's password) and service A.
async fn make_realm(bin: &Path, data: &Path, db: Option<&str>, realm: &str) {
    let data = data.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--data".to_owned(), data.to_owned()]);
        if let Some(url) = db {
            all.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        all
    };
    let run = |args: Vec<String>, stdin: Option<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kdc_command(bin, &args, stdin.as_deref()).await.unwrap();
    };
    run(with(&["init", "--realm", realm, "--admin-password-stdin"]), Some(format!("{ADMIN_PW}\n"))).await;
    for u in 0..USERS {
        let name = format!("user{u}");
        run(with(&["principal", "add", &name, "--password-stdin"]), Some(format!("{ALICE_PW}\n"))).await;
    }
    run(with(&["principal", "add", &format!("HTTP/a.example.test@{realm}"), "--service"]), None).await;
}

/// Where one configuration's CPU is counted.
#[derive(Default)]
struct Meters {
    /// KDC processes serving the load.
    kdc_pids: Vec<u32>,
    /// The run's PostgreSQL database, whose backends are counted.
    postgres: Option<Arc<Database>>,
    /// The Redis the configuration uses, whose CPU is counted.
    redis: Option<String>,
}

/// One configuration, and what its rounds gave.
struct Config {
    label: &'static str,
    load: Arc<Load>,
    meters: Meters,
    rates: Vec<f64>,
    ok: u64,
    kdc_cpu: f64,
    postgres_cpu: f64,
    redis_cpu: f64,
    own_cpu: f64,
}

impl Config {
    fn new(label: &'static str, load: Load, meters: Meters) -> Self {
        let load = Arc::new(load);
        let (rates, ok, kdc_cpu, postgres_cpu, redis_cpu, own_cpu) = (Vec::new(), 0, 0.0, 0.0, 0.0, 0.0);
        Self { label, load, meters, rates, ok, kdc_cpu, postgres_cpu, redis_cpu, own_cpu }
    }

    /// One measured round.
    async fn round(&mut self, length: Duration, ticks: f64) {
        let kdc_cpu = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p, ticks)).sum::<f64>();
        let pg_before = self.meters.postgres.as_ref().map(|db| db.backends(ticks)).unwrap_or_default();
        let redis_before = self.meters.redis.as_deref().and_then(redis_cpu_secs);
        let (kdc_before, own_before) = (kdc_cpu(&self.meters.kdc_pids), cpu_secs(std::process::id(), ticks));
        let t = drive(&self.load, length).await;
        self.kdc_cpu += kdc_cpu(&self.meters.kdc_pids) - kdc_before;
        self.own_cpu += cpu_secs(std::process::id(), ticks) - own_before;
        if let Some(db) = &self.meters.postgres {
            // Backends opened during the round count from zero.
            let after = db.backends(ticks);
            self.postgres_cpu += after.iter().map(|(pid, cpu)| cpu - pg_before.get(pid).unwrap_or(&0.0)).sum::<f64>();
        }
        if let (Some(before), Some(after)) = (redis_before, self.meters.redis.as_deref().and_then(redis_cpu_secs)) {
            self.redis_cpu += after - before;
        }
        assert_eq!(
            t.failed,
            0,
            "{}: {} of {} requests failed, first: {}",
            self.label,
            t.failed,
            t.ok + t.failed,
            t.first_failure.unwrap_or_default()
        );
        self.ok += t.ok;
        self.rates.push(t.ok as f64 / t.elapsed.as_secs_f64());
    }

    fn median(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }

    /// CPU per request, µs.
    fn per_request(&self, cpu: f64) -> f64 {
        cpu / self.ok.max(1) as f64 * 1e6
    }
}

/// Warms every configuration up, then measures `ROUNDS` rounds of each,
/// alternating.
async fn measure(configs: &mut [Config], length: Duration, ticks: f64) {
    for c in configs.iter() {
        let t = drive(&c.load, WARM_UP).await;
        assert_eq!(t.failed, 0, "{} (warm-up): {}", c.label, t.first_failure.unwrap_or_default());
    }
    for _ in 0..ROUNDS {
        for c in configs.iter_mut() {
            c.round(length, ticks).await;
        }
    }
}

fn rounds(c: &Config) -> String {
    c.rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" ")
}

fn main() {
    let secs: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(6.0);
    let length = Duration::from_secs_f64(secs / ROUNDS as f64);
    let ticks = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pg_server = std::env::var("KDC_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let redis = std::env::var("KDC_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    assert!(redis_cli(&redis, &["ping"]).is_some(), "Redis at {redis} does not answer (or no redis-cli)");
    let bin = kdc_bin();
    // Unique to this run: the database, the realm (the KDCs' Redis namespace
    // is `kdc/<realm>`) and the services' Redis namespace.
    let id = format!("{}-{}", std::process::id(), now().0 % 1_000_000_000);
    let realm = format!("SCALE-{id}.TEST");
    let service = format!("HTTP/a.example.test@{realm}");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(&pg_server, &format!("kdc_bench_scale_out_{}", id.replace('-', "_"))));
        let (sqlite_data, pg_data) = (dir.path().join("sqlite"), dir.path().join("pg"));
        tokio::join!(make_realm(&bin, &sqlite_data, None, &realm), make_realm(&bin, &pg_data, Some(&db.url), &realm));
        let pg = ["--database-url", db.url.as_str()];
        let pg_redis = ["--database-url", db.url.as_str(), "--replay-cache-url", redis.as_str()];
        let sqlite = KdcProcess::start(&bin, &sqlite_data).await.unwrap();
        let (n1, n2) = (
            KdcProcess::start_with(&bin, &pg_data, &pg).await.unwrap(),
            KdcProcess::start_with(&bin, &pg_data, &pg).await.unwrap(),
        );
        let (r1, r2) = (
            KdcProcess::start_with(&bin, &pg_data, &pg_redis).await.unwrap(),
            KdcProcess::start_with(&bin, &pg_data, &pg_redis).await.unwrap(),
        );
        // Idle keep-alive connections are dropped by the client well before
        // the server's 10 s idle timeout would close one under a request.
        let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5)).build().unwrap();
        let client = |p: &KdcProcess| ProtoClient::with_http(&p.url, http.clone());
        let (mut tgts_sqlite, mut tgts_pg) = (Vec::new(), Vec::new());
        for u in 0..USERS {
            let user = format!("user{u}@{realm}");
            tgts_sqlite.push(client(&sqlite).login(&user, ALICE_PW).await.unwrap());
            // One TGT for every instance on the database (same master key and keys).
            tgts_pg.push(client(&n1).login(&user, ALICE_PW).await.unwrap());
        }
        let tgs = |kdcs: &[&KdcProcess], tgts: &[Credentials]| Load::Tgs {
            kdcs: kdcs.iter().map(|p| client(p)).collect(),
            tgts: tgts.to_vec(),
            service: service.clone(),
        };
        let pids = |kdcs: &[&KdcProcess]| kdcs.iter().map(|p| p.pid().unwrap()).collect::<Vec<_>>();
        let on_pg = |kdcs: &[&KdcProcess], with_redis: bool| Meters {
            kdc_pids: pids(kdcs),
            postgres: Some(db.clone()),
            redis: with_redis.then(|| redis.clone()),
        };
        let mut kdc_configs = vec![
            Config::new(
                "(a) 1 KDC, SQLite",
                tgs(&[&sqlite], &tgts_sqlite),
                Meters { kdc_pids: pids(&[&sqlite]), ..Meters::default() },
            ),
            Config::new("(b) 1 KDC, PostgreSQL", tgs(&[&n1], &tgts_pg), on_pg(&[&n1], false)),
            Config::new("(b') 1 KDC, PostgreSQL + Redis", tgs(&[&r1], &tgts_pg), on_pg(&[&r1], true)),
            Config::new("(c) 2 KDCs, PostgreSQL + Redis", tgs(&[&r1, &r2], &tgts_pg), on_pg(&[&r1, &r2], true)),
            Config::new("(c') 2 KDCs, PostgreSQL", tgs(&[&n1, &n2], &tgts_pg), on_pg(&[&n1, &n2], false)),
        ];
        measure(&mut kdc_configs, length, ticks).await;

        // Services: in-process, on a KDC of their own (realm EXAMPLE.TEST).
        let kdc = TestKdc::start().await.unwrap();
        let creds = {
            let c = kdc.client();
            let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
            c.service_ticket(&tgt, SVC_A).await.unwrap()
        };
        let in_memory = TestService::start(&kdc, SVC_A).await.unwrap();
        let cache: Arc<dyn ReplayCache> =
            connect_redis_replay_cache(&redis, RedisReplayConfig::new(format!("scale-out-bench-{id}"))).await.unwrap();
        let on_redis = TestService::start_with(&kdc, SVC_A, |b| b.replay_cache(cache)).await.unwrap();
        let bare = axum::Router::new().route("/hello", get(|| async { HELLO }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, bare).await.unwrap() });
        // The bare handler gets an `Authorization` header of the same size and ignores it.
        let hello = |base: &str, mutual: bool| Load::Hello {
            http: http.clone(),
            url: format!("{base}/hello"),
            creds: Box::new(creds.clone()),
            mutual,
        };
        let mut svc_configs = vec![
            Config::new("bare handler (no layer)", hello(&bare_url, false), Meters::default()),
            Config::new("TicketAuthLayer, in-memory replay cache", hello(&in_memory.url, true), Meters::default()),
            Config::new(
                "TicketAuthLayer, Redis replay cache",
                hello(&on_redis.url, true),
                Meters { redis: Some(redis.clone()), ..Meters::default() },
            ),
        ];
        measure(&mut svc_configs, length, ticks).await;

        println!(
            "scale_out: {CLIENTS} concurrent keep-alive clients (tokio tasks, reqwest), a fresh authenticator per \
             request, every reply checked; {ROUNDS} alternating rounds of {:.1} s per configuration after a {} s \
             warm-up; medians. Machine: {cores} cores. kdc: {}",
            length.as_secs_f64(),
            WARM_UP.as_secs(),
            bin.display()
        );
        println!(
            "Load generator, KDCs, PostgreSQL and Redis all share these {cores} cores: two KDCs on one box measure \
             contention, not scaling. CPU per ticket makes the per-ticket cost comparable."
        );
        println!();
        println!("1. service tickets (POST /tickets), release kdc processes; CPU µs per ticket:");
        println!(
            "   {:<32} {:>9}  {:>7} {:>7} {:>7} {:>7}  {:>9}   rounds",
            "", "tickets/s", "kdc", "pg", "redis", "server", "loadgen"
        );
        for c in &kdc_configs {
            let (k, p, r) = (c.per_request(c.kdc_cpu), c.per_request(c.postgres_cpu), c.per_request(c.redis_cpu));
            let dash = |on: bool, v: f64| if on { format!("{v:.0}") } else { "-".to_owned() };
            println!(
                "   {:<32} {:>9.0}  {:>7.0} {:>7} {:>7} {:>7.0}  {:>9.0}   {}",
                c.label,
                c.median(),
                k,
                dash(c.meters.postgres.is_some(), p),
                dash(c.meters.redis.is_some(), r),
                k + p + r,
                c.per_request(c.own_cpu),
                rounds(c)
            );
        }
        let m = |i: usize| kdc_configs[i].median();
        println!(
            "   ratios: PostgreSQL/SQLite {:.2}x; Redis on 1 KDC {:.2}x; 2 KDCs/1 KDC with Redis {:.2}x, without {:.2}x",
            m(1) / m(0),
            m(2) / m(1),
            m(3) / m(2),
            m(4) / m(1)
        );
        println!(
            "   (pg: the PostgreSQL backends of this database; redis: the whole Redis server; server = kdc + pg + \
             redis; loadgen: this process)"
        );
        println!();
        println!("2. validated requests/s, GET /hello, in-process service (load generator in the same process):");
        for c in &svc_configs {
            let redis_cpu = if c.meters.redis.is_some() {
                format!("   Redis {:.1} CPU µs/request", c.per_request(c.redis_cpu))
            } else {
                String::new()
            };
            println!("   {:<40} {:>9.0} requests/s   rounds {}{redis_cpu}", c.label, c.median(), rounds(c));
        }
        let s = |i: usize| svc_configs[i].median();
        println!(
            "   ratios: in-memory/bare {:.2}x, Redis/bare {:.2}x, Redis/in-memory {:.2}x",
            s(1) / s(0),
            s(2) / s(0),
            s(2) / s(1)
        );
        drop((sqlite, n1, n2, r1, r2));
    });
    redis_cleanup(&redis, &id);
}

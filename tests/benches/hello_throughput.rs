//! Throughput of the hello service with and without `TicketAuthLayer`,
//! measured with wrk in the same run, alternating rounds.
//!
//! `cargo bench -p kdc-e2e --bench hello_throughput [-- SECONDS]`
//! (needs `wrk`: `apt-get install -y wrk`; `scripts/bench.sh` installs it).
//!
//! Each authenticated request carries its own pre-generated authenticator
//! (wrk replays nothing: every header is used once), so the layer does its
//! full work: ticket lookup, authenticator, binding, replay cache, and the
//! mutual reply over the response.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::io::Write;
use std::process::Command;

use auth_middleware::InMemoryReplayCache;
use axum::routing::get;
use kdc_e2e::{ALICE_PW, SVC_A, TestKdc, TestService, ap_authorization, now};

const LUA: &str = r#"
local counter = 0
local lines = {}
local idx = 0
setup = function(thread)
  thread:set("id", counter)
  counter = counter + 1
end
init = function(args)
  if args[1] then
    for l in io.lines(args[1] .. "." .. id) do lines[#lines + 1] = l end
  end
end
request = function()
  if #lines == 0 then return wrk.format("GET", "/hello") end
  idx = idx + 1
  if idx > #lines then idx = 1 end
  return wrk.format("GET", "/hello", { ["Authorization"] = lines[idx] })
end
"#;

fn wrk(url: &str, secs: u32, script: &std::path::Path, headers: Option<&str>) -> (f64, u64) {
    // `headers` names the per-thread files of pre-generated Authorization values.
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", &format!("-d{secs}s"), "-s"]).arg(script).arg(url);
    if let Some(h) = headers {
        cmd.arg("--").arg(h);
    }
    let out = cmd.output().expect("wrk is not installed: apt-get install -y wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rps, non2xx)
}

fn main() {
    let secs: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let per_thread = (secs as usize) * 60_000;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hello.lua");
    std::fs::write(&script, LUA).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (bare_url, layer_url, _kdc, _svc, creds) = rt.block_on(async {
        let kdc = TestKdc::start().await.unwrap();
        // The default 300 s skew window: within a run nothing expires, so
        // the replay cache only grows (page faults and rehashing included),
        // which is the layer's worst case. Sized for a benchmark's rate from a
        // single principal.
        // A first start: nothing came before, so no warm-up.
        let cache = std::sync::Arc::new(InMemoryReplayCache::with_history(20_000_000, 20_000_000, None));
        let svc = TestService::start_with(&kdc, SVC_A, |b| b.replay_cache(cache)).await.unwrap();
        let c = kdc.client();
        let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
        let creds = c.service_ticket(&tgt, SVC_A).await.unwrap();
        // The same handler shape with no layer: the baseline.
        let bare = axum::Router::new().route("/hello", get(|| async { "hello, alice@EXAMPLE.TEST" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, bare).await.unwrap() });
        (bare_url, svc.url.clone(), kdc, svc, creds)
    });
    let mut bare = Vec::new();
    let mut layered = Vec::new();
    // Round 0 warms up (caches, allocator, replay cache at steady state) and is not counted.
    for round in 0..4 {
        // Fresh authenticators for this round, one file per wrk thread.
        let prefix = dir.path().join(format!("headers-{round}"));
        for t in 0..2 {
            let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{}.{t}", prefix.display())).unwrap());
            for _ in 0..per_thread {
                let (h, _) = ap_authorization(&creds, "GET", &format!("{layer_url}/hello"), None, now());
                writeln!(f, "{h}").unwrap();
            }
        }
        // The baseline receives the same headers (and ignores them), so the
        // difference is the layer's work, not the size of the request.
        let (rps, non2xx) = wrk(&format!("{layer_url}/hello"), secs, &script, Some(prefix.to_str().unwrap()));
        let b = wrk(&format!("{bare_url}/hello"), secs, &script, Some(prefix.to_str().unwrap())).0;
        assert_eq!(non2xx, 0, "authenticated run had {non2xx} refused requests (too few pre-generated headers?)");
        if round > 0 {
            bare.push(b);
            layered.push(rps);
        }
    }
    bare.sort_by(f64::total_cmp);
    layered.sort_by(f64::total_cmp);
    let (b, l) = (bare[1], layered[1]);
    println!("hello over HTTP/1.1 keep-alive, wrk -t2 -c32 -d{secs}s, 3 alternating rounds after a warm-up, medians:");
    println!("  bare axum handler           {b:>10.0} requests/s   (rounds: {bare:.0?})");
    println!("  behind TicketAuthLayer      {l:>10.0} requests/s   (rounds: {layered:.0?})");
    println!("  ratio                       {:>10.2}x", l / b);
}

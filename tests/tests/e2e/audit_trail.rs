//! The audit trail and the logs of a real `kdc serve` (issue 10): every
//! issuance, renewal, refusal and admin change (HTTP or `kdc` command) is
//! one chained event carrying the request id the client saw; `kdc audit
//! verify` catches an edit (middle or last line), a deletion and a cut; the
//! log has one JSON line per request; and no password, key, ticket,
//! authenticator or sealed value reaches either.

use std::path::Path;

use kdc_e2e::*;
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::durability::realm_in;
use crate::kdc_bin;

const BOOTSTRAP_PW: &str = "bootstrap-pw-123";
const BOB_PW_CLI: &str = "bob's own cli password";
const CAROL_PW: &str = "carol's sealed password";
const WRONG_PW: &str = "a wrong password for alice";

/// An HTTP client that sends `X-Request-Id: id` on every request.
fn with_id(id: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-request-id", id.parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// `kdc ARGS` with the exit status and everything it printed.
fn kdc_status(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(kdc_bin()).args(args).env_remove("KDC_MASTER_KEY").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn verify(file: &Path) -> (bool, String) {
    kdc_status(&["audit", "verify", file.to_str().unwrap()])
}

/// The events of an audit file, each checked to be a JSON object.
fn events(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The one event of kind `event` for `request_id`.
fn the<'a>(events: &'a [Value], event: &str, request_id: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == event && e["request_id"] == request_id).collect();
    assert_eq!(found.len(), 1, "{event} for {request_id}: {found:?}");
    found[0]
}

/// A copy of `file` with its lines changed by `edit`, verified: returns
/// what `kdc audit verify` said (it must fail).
fn tampered(file: &Path, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let mut lines: Vec<String> = std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect();
    edit(&mut lines);
    let copy = file.with_file_name(name);
    std::fs::write(&copy, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (ok, out) = verify(&copy);
    assert!(!ok, "verify accepted the {name} copy: {out}");
    out
}

#[tokio::test]
async fn a_whole_flow_is_audited_with_request_ids_verifiably_and_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    let audit = dir.path().join("audit.log");
    let a = audit.to_str().unwrap();
    let log = dir.path().join("kdc.log");
    let cli_keytab = dir.path().join("a.keytab");

    // Changes by the `kdc` command before the KDC runs.
    kdc_command(
        &kdc_bin(),
        &["principal", "add", "bob", "--data", d, "--password-stdin", "--audit-log", a],
        Some(&format!("{BOB_PW_CLI}\n")),
    )
    .await
    .unwrap();
    kdc_command(
        &kdc_bin(),
        &["keytab", "export", SVC_A, "--data", d, "--out", cli_keytab.to_str().unwrap(), "--audit-log", a],
        None,
    )
    .await
    .unwrap();

    let kdc =
        KdcProcess::start_logged(&kdc_bin(), &data, &["--audit-log", a, "--log-format", "json"], &log).await.unwrap();
    let url = kdc.url.clone();
    let mut secrets: Vec<String> = Vec::new();

    // Login, service ticket and renewal, each under a request id of ours.
    let c = ProtoClient::with_http(&url, with_id("e2e-login"));
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    let tgt = c.initial(&key, &req).await.unwrap().unwrap();
    secrets.extend([req.pre_auth.clone().unwrap(), tgt.ticket.clone(), tgt.enc.session_key.to_b64(), key.to_b64()]);

    let c = ProtoClient::with_http(&url, with_id("e2e-tgs"));
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    let st = c.tgs(&tgt, &req).await.unwrap().unwrap();
    secrets.extend([req.authenticator.clone(), st.ticket.clone(), st.enc.session_key.to_b64()]);

    let c = ProtoClient::with_http(&url, with_id("e2e-renew"));
    let req = ProtoClient::renew_request(&tgt, now()).unwrap();
    let renewed = c.post("/tickets/renew", &req).await.unwrap();
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    secrets.extend([req.authenticator.clone()]);
    for f in ["ticket", "enc_part"] {
        secrets.push(renewed.body[f].as_str().unwrap().to_owned());
    }

    // A wrong password and an unknown name: the client sees the same, the
    // trail says which, and the problem names the request.
    let c = ProtoClient::with_http(&url, with_id("e2e-badpw"));
    let wrong = c.derive_key("alice@EXAMPLE.TEST", WRONG_PW).await.unwrap();
    let req = ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap();
    let refused = c.initial(&wrong, &req).await.unwrap().unwrap_err();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["instance"], "urn:kdc-http:request:e2e-badpw");
    secrets.push(req.pre_auth.clone().unwrap());
    let c = ProtoClient::with_http(&url, with_id("e2e-nobody"));
    let nobody = c.derive_key("nobody@EXAMPLE.TEST", WRONG_PW).await.unwrap();
    let req = ProtoClient::initial_request(&nobody, "nobody@EXAMPLE.TEST", now()).unwrap();
    assert_eq!(c.initial(&nobody, &req).await.unwrap().unwrap_err().status, 401);

    // No id sent: the KDC makes one, answers with it, and records it.
    let r = reqwest::Client::new()
        .post(format!("{url}/tickets"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 22);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["instance"], format!("urn:kdc-http:request:{generated}"));
    // And an id we sent is echoed.
    let r = with_id("e2e-echo").get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "e2e-echo");

    // The admin API: create, rotate, keytab, disable, delete, a refusal.
    let mut admin = Admin::login(&url, "admin@EXAMPLE.TEST", BOOTSTRAP_PW).await;
    secrets.extend([admin.creds.ticket.clone(), admin.creds.enc.session_key.to_b64()]);
    admin.http = with_id("e2e-admin-create");
    let sealed_pw = admin.seal(CAROL_PW);
    secrets.push(sealed_pw.clone());
    let (s, body, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "carol", "kind": "user", "password_sealed": sealed_pw, "roles": ["reader"]})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    admin.http = with_id("e2e-admin-rotate");
    let (s, body, _) = admin.call("POST", "/admin/principals/HTTP%2Fa.example.test/rotate", None).await;
    assert_eq!((s, body["kvno"].as_u64()), (200, Some(2)), "{body}");
    admin.http = with_id("e2e-admin-keytab");
    let (s, body, _) = admin.call("GET", "/admin/principals/HTTP%2Fa.example.test/keytab", None).await;
    assert_eq!(s, 200, "{body}");
    let sealed_kt = body["keytab_sealed"].as_str().unwrap().to_owned();
    let plain = kdc_proto::SealedObject::parse(&sealed_kt, 16 * 1024)
        .unwrap()
        .open(&admin.creds.enc.session_key, kdc_proto::Usage::SessionSecretReply)
        .unwrap();
    let kt: kdc_proto::Keytab = serde_json::from_slice(&plain).unwrap();
    secrets.extend(kt.keys.iter().map(|k| k.key.to_b64()));
    secrets.push(sealed_kt);
    admin.http = with_id("e2e-admin-unlock");
    let (s, _, _) = admin.call("POST", "/admin/principals/alice/unlock", None).await;
    assert_eq!(s, 204);
    admin.http = with_id("e2e-admin-disable");
    let (s, _, _) = admin.call("PATCH", "/admin/principals/carol", Some(json!({"disabled": true}))).await;
    assert_eq!(s, 200);
    admin.http = with_id("e2e-admin-delete");
    let (s, _, _) = admin.call("DELETE", "/admin/principals/carol", None).await;
    assert_eq!(s, 204);
    admin.http = with_id("e2e-admin-dup");
    let (s, body, _) =
        admin.call("POST", "/admin/principals", Some(json!({"name": "HTTP/a.example.test", "kind": "service"}))).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["instance"], "urn:kdc-http:request:e2e-admin-dup");

    // An admin problem carries `instance` under the mutual reply, which
    // still verifies: the id went in before the body was signed.
    let target = format!("{url}/admin/principals/nobody");
    let (authz, sent) = ap_authorization(&admin.creds, "GET", &target, None, now());
    let r = with_id("e2e-admin-404").get(&target).header("authorization", authz).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let mutual = r.headers()["authentication-info"].to_str().unwrap().to_owned();
    let mutual = mutual.strip_prefix("mutual=\"").and_then(|m| m.strip_suffix('"')).unwrap().to_owned();
    let bytes = r.bytes().await.unwrap();
    kdc_proto::verify_mutual_reply(&mutual, &admin.creds.enc.session_key, &sent, 404, &bytes).unwrap();
    let problem: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(problem["instance"], "urn:kdc-http:request:e2e-admin-404");

    // The `kdc` command while the KDC serves: same file, same chain.
    kdc_command(&kdc_bin(), &["principal", "disable", "alice", "--data", d, "--audit-log", a], None).await.unwrap();
    let c = ProtoClient::with_http(&url, with_id("e2e-disabled"));
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    assert_eq!(c.initial(&key, &req).await.unwrap().unwrap_err().status, 403);
    secrets.push(req.pre_auth.clone().unwrap());

    let status = kdc.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    kdc_command(&kdc_bin(), &["principal", "enable", "alice", "--data", d, "--audit-log", a], None).await.unwrap();

    // Every expected event, with the request id the client saw.
    let ev = events(&audit);
    for (n, e) in ev.iter().enumerate() {
        assert_eq!(e["seq"], n as u64 + 1);
        assert!(e["ts"].as_str().unwrap().ends_with('Z'), "{e}");
        if e.get("request_id").is_some() {
            assert_eq!(e["address"], "127.0.0.1", "{e}");
        }
    }
    let by_cli: Vec<(&str, &str)> = ev
        .iter()
        .filter(|e| e["actor"] == "cli")
        .map(|e| (e["event"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        by_cli,
        [
            ("principal.created", "bob@EXAMPLE.TEST"),
            ("keytab.exported", SVC_A),
            ("principal.updated", "alice@EXAMPLE.TEST"),
            ("principal.updated", "alice@EXAMPLE.TEST"),
        ]
    );
    let cli_updates: Vec<&Value> =
        ev.iter().filter(|e| e["actor"] == "cli" && e["event"] == "principal.updated").collect();
    assert_eq!(cli_updates[0]["changes"], json!({"disabled": true}));
    assert_eq!(cli_updates[1]["changes"], json!({"disabled": false}));

    // The challenge that opens a login is not recorded: it proves nothing
    // and anyone may ask for one, so each login is one event.
    assert!(!ev.iter().any(|e| e["problem"] == "preauth-required"), "a challenge was recorded");
    assert_eq!(ev.iter().filter(|e| e["request_id"] == "e2e-login").count(), 1);
    let issued = the(&ev, "ticket.issued", "e2e-login");
    assert_eq!(issued["exchange"], "initial");
    assert_eq!(issued["actor"], "alice@EXAMPLE.TEST");
    assert_eq!(issued["service"], "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST");
    assert_eq!(issued["outcome"], "success");
    let issued = the(&ev, "ticket.issued", "e2e-tgs");
    assert_eq!((&issued["exchange"], &issued["service"]), (&json!("service"), &json!(SVC_A)));
    assert_eq!(the(&ev, "ticket.renewed", "e2e-renew")["actor"], "alice@EXAMPLE.TEST");
    let bad = the(&ev, "ticket.refused", "e2e-badpw");
    assert_eq!((&bad["problem"], &bad["reason"]), (&json!("preauth-failed"), &json!("wrong-key")));
    let unknown: Vec<&Value> = ev.iter().filter(|e| e["request_id"] == "e2e-nobody").collect();
    assert!(unknown.iter().all(|e| e["reason"] == "unknown-principal" && e.get("actor").is_none()), "{unknown:?}");
    assert_eq!(unknown.len(), 1);
    let malformed = the(&ev, "ticket.refused", &generated);
    assert_eq!((&malformed["problem"], &malformed["exchange"]), (&json!("malformed-request"), &json!("service")));
    let disabled = the(&ev, "ticket.refused", "e2e-disabled");
    assert_eq!(
        (&disabled["problem"], &disabled["reason"]),
        (&json!("client-not-permitted"), &json!("client-disabled"))
    );

    let admin_event = |event: &str, id: &str| {
        let e = the(&ev, event, id).clone();
        assert_eq!(e["actor"], "admin@EXAMPLE.TEST", "{e}");
        e
    };
    let created = admin_event("principal.created", "e2e-admin-create");
    assert_eq!(created["target"], "carol@EXAMPLE.TEST");
    assert_eq!(created["changes"]["kind"], "user");
    assert_eq!(created["changes"]["roles"], json!(["reader"]));
    let rotated = admin_event("principal.rotated", "e2e-admin-rotate");
    assert_eq!((&rotated["target"], &rotated["kvno"]), (&json!(SVC_A), &json!(2)));
    assert_eq!(admin_event("keytab.exported", "e2e-admin-keytab")["kvnos"], json!([2, 1]));
    let unlocked = admin_event("principal.unlocked", "e2e-admin-unlock");
    assert_eq!((&unlocked["target"], &unlocked["outcome"]), (&json!("alice@EXAMPLE.TEST"), &json!("success")));
    assert_eq!(admin_event("principal.updated", "e2e-admin-disable")["changes"], json!({"disabled": true}));
    assert_eq!(admin_event("principal.deleted", "e2e-admin-delete")["target"], "carol@EXAMPLE.TEST");
    let dup = admin_event("principal.created", "e2e-admin-dup");
    assert_eq!((&dup["outcome"], &dup["problem"]), (&json!("refused"), &json!("principal-exists")));

    // The chain holds, and every kind of tampering is named by line.
    let (ok, out) = verify(&audit);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{} event(s), chain intact", ev.len())), "{out}");
    let tgs_line = ev.iter().position(|e| e["request_id"] == "e2e-tgs").unwrap();
    let out = tampered(&audit, "edited-middle", |l| l[tgs_line] = l[tgs_line].replace("alice", "mallory"));
    assert!(out.contains(&format!("line {}: its content does not match its hash", tgs_line + 1)), "{out}");
    let last = ev.len() - 1;
    let out = tampered(&audit, "edited-last", |l| {
        l[last] = l[last].replace("\"enabled\"", "\"disabled\"").replace("false", "true")
    });
    assert!(out.contains(&format!("line {}:", last + 1)), "{out}");
    let out = tampered(&audit, "deleted", |l| {
        l.remove(tgs_line);
    });
    assert!(out.contains(&format!("line {}: seq is {}", tgs_line + 1, tgs_line + 2)), "{out}");
    assert!(out.contains("deleted"), "{out}");
    let out = tampered(&audit, "cut", |l| {
        let n = l[last].len();
        l[last].truncate(n - 30);
    });
    assert!(out.contains(&format!("line {}:", last + 1)), "{out}");

    // One JSON log line per request, without colour codes.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.contains('\u{1b}'), "ANSI codes in a log file");
    let lines: Vec<Value> = log_text.lines().map(|l| serde_json::from_str(l).expect("a JSON log line")).collect();
    let request_lines = |id: &str| -> Vec<&Value> { lines.iter().filter(|l| l.to_string().contains(id)).collect() };
    let tgs = request_lines("e2e-tgs");
    assert_eq!(tgs.len(), 1, "{tgs:?}");
    let l = tgs[0];
    assert_eq!(
        (&l["message"], &l["method"], &l["path"], &l["status"], &l["client"], &l["request_id"]),
        (&json!("request"), &json!("POST"), &json!("/tickets"), &json!(200), &json!("127.0.0.1"), &json!("e2e-tgs"))
    );
    assert!(l["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(request_lines("e2e-login").len(), 2, "challenge and login: two requests");
    assert_eq!(request_lines("e2e-admin-keytab").len(), 1);

    // No secret in either output: passwords whole; keys, tickets,
    // authenticators and sealed values by any 24-character piece.
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let master = std::fs::read_to_string(data.join("master.key")).unwrap();
    secrets.push(master.trim().to_owned());
    let kt: Value = serde_json::from_str(&std::fs::read_to_string(&cli_keytab).unwrap()).unwrap();
    for k in kt["keys"].as_array().unwrap() {
        secrets.push(k["key"].as_str().unwrap().to_owned());
    }
    for (name, text) in [("log", &log_text), ("audit trail", &audit_text)] {
        for pw in [ALICE_PW, BOOTSTRAP_PW, BOB_PW_CLI, CAROL_PW, WRONG_PW] {
            assert!(!text.contains(pw), "a password in the {name}");
        }
        for s in &secrets {
            assert!(s.len() >= 32, "a secret too short to check by pieces: {}", s.len());
            let mid = s.len() / 2;
            assert!(!text.contains(&s[mid - 12..mid + 12]), "secret material in the {name}");
        }
    }
}

#[tokio::test]
async fn logs_are_json_off_a_terminal_by_default_and_the_audit_trail_can_go_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let log = dir.path().join("kdc.log");
    let kdc = KdcProcess::start_logged(&kdc_bin(), &data, &[], &log).await.unwrap();
    let c = ProtoClient::with_http(&kdc.url, with_id("default-format"));
    c.get("/healthz").await.unwrap();
    kdc.terminate().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON by default")).collect();
    assert!(lines.iter().any(|l| l["request_id"] == "default-format" && l["path"] == "/healthz"), "{text}");

    // `--audit-log -`: events on standard output, the banner on standard
    // error, so standard output verifies as a chain.
    let mut child = tokio::process::Command::new(kdc_bin())
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--audit-log", "-"])
        .env("KDC_LOG", "warn")
        .env_remove("KDC_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = err.next_line().await.unwrap().expect("the banner on standard error");
        if let Some(i) = line.find("http://") {
            break line[i..].to_owned();
        }
    };
    let c = ProtoClient::with_http(&url, with_id("to-stdout"));
    c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let stdout_file = dir.path().join("stdout.log");
    std::fs::write(&stdout_file, &out.stdout).unwrap();
    let (ok, said) = verify(&stdout_file);
    assert!(ok, "{said}");
    let ev = events(&stdout_file);
    assert_eq!(ev.len(), 1, "the login (its challenge is not recorded)");
    assert_eq!(the(&ev, "ticket.issued", "to-stdout")["actor"], "alice@EXAMPLE.TEST");
}

/// An audit trail that cannot be written (`/dev/full`: every write fails
/// with "no space"): logins go on, counted as unrecorded; admin changes are
/// refused before anything changes (the login's failed events already put
/// the trail in the failing state); a `kdc` command says what it changed
/// unrecorded.
#[tokio::test]
async fn when_the_audit_trail_fails_tickets_go_on_and_admin_changes_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let log = dir.path().join("kdc.log");
    let kdc = KdcProcess::start_logged(&kdc_bin(), &data, &["--audit-log", "/dev/full"], &log).await.unwrap();
    let c = ProtoClient::new(&kdc.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    c.service_ticket(&tgt, SVC_A).await.unwrap();

    let admin = Admin::login(&kdc.url, "admin@EXAMPLE.TEST", BOOTSTRAP_PW).await;
    for path in ["/admin/principals", "/admin/principals/HTTP%2Fa.example.test/keytab"] {
        let (s, body, _) = if path.ends_with("keytab") {
            admin.call("GET", path, None).await
        } else {
            admin.call("POST", path, Some(json!({"name": "HTTP/new.example.test", "kind": "service"}))).await
        };
        assert_eq!((s, body["type"].as_str()), (503, Some("urn:kdc-http:problem:audit-unavailable")), "{body}");
        assert!(body["detail"].as_str().unwrap().contains("refused"), "{body}");
        assert!(body.get("keytab_sealed").is_none());
    }
    let (s, _, _) = admin.call("GET", "/admin/principals/HTTP%2Fnew.example.test", None).await;
    assert_eq!(s, 404, "the refused creation changed nothing");
    // Issuance still works while the trail fails.
    c.service_ticket(&tgt, SVC_A).await.unwrap();
    let text = reqwest::get(format!("{}/metrics", kdc.url)).await.unwrap().text().await.unwrap();
    let failures = text
        .lines()
        .find_map(|l| l.strip_prefix("kdc_audit_write_failures_total "))
        .map(|n| n.parse::<u64>().unwrap())
        .unwrap();
    assert!(failures >= 5, "{text}");
    kdc.terminate().await.unwrap();
    let errors =
        std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("writing the audit log failed")).count();
    assert_eq!(errors, 1, "logged once per outage, not per event");

    let d = data.to_str().unwrap();
    let (ok, out) = kdc_status(&[
        "principal",
        "add",
        "HTTP/third.example.test",
        "--service",
        "--data",
        d,
        "--audit-log",
        "/dev/full",
    ]);
    assert!(!ok);
    assert!(
        out.contains("HTTP/third.example.test@EXAMPLE.TEST was created, but the audit log could not record it"),
        "{out}"
    );
}

/// A writer that fails once `broken` is set, like a disk that fills up.
#[derive(Clone, Default)]
struct Breakable {
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl std::io::Write for Breakable {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        self.written.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The trail breaks between a check and a change: the change is made and
/// the answer says so (`503`, "was applied"); the next change is refused
/// before it is made; once the trail works again, so do changes.
#[tokio::test]
async fn a_change_the_trail_could_not_record_is_answered_503_saying_it_was_applied() {
    use kdc_server::{AuditLog, AuditSink, FsyncPolicy};
    let sink = Breakable::default();
    let audit = AuditLog::with_sink(AuditSink::stream(Box::new(sink.clone())), FsyncPolicy::Always).unwrap();
    let k = TestKdc::start_with_audit(audit).await.unwrap();
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let create = |name: &str| Some(json!({"name": name, "kind": "service"}));

    sink.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, body, _) = admin.call("POST", "/admin/principals", create("HTTP/first.example.test")).await;
    assert_eq!((s, body["type"].as_str()), (503, Some("urn:kdc-http:problem:audit-unavailable")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("was applied"), "{body}");
    assert!(k.kdc.find(&"HTTP/first.example.test@EXAMPLE.TEST".parse().unwrap()).await.unwrap().is_some());
    let (s, body, _) = admin.call("POST", "/admin/principals", create("HTTP/second.example.test")).await;
    assert_eq!(s, 503);
    assert!(body["detail"].as_str().unwrap().contains("refused"), "{body}");
    assert!(k.kdc.find(&"HTTP/second.example.test@EXAMPLE.TEST".parse().unwrap()).await.unwrap().is_none());

    // Repaired: a ticket event succeeds, and changes are recorded again.
    sink.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    k.client().login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let (s, body, _) = admin.call("POST", "/admin/principals", create("HTTP/second.example.test")).await;
    assert_eq!(s, 201, "{body}");
    let written = sink.written.lock().unwrap().clone();
    let text = String::from_utf8(written).unwrap();
    assert!(text.lines().last().unwrap().contains("\"target\":\"HTTP/second.example.test@EXAMPLE.TEST\""), "{text}");
}

/// A client that sends an admin change and hangs up while the KDC is making
/// it: the change is made, and so is its event (the change and the record
/// run detached from the request, so dropping the request cannot separate
/// them). The store's write lock, held from outside, keeps the change in
/// progress while the client leaves.
#[tokio::test]
async fn an_admin_change_whose_client_hangs_up_is_still_audited() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let audit = dir.path().join("audit.log");
    let kdc = KdcProcess::start_with(&kdc_bin(), &data, &["--audit-log", audit.to_str().unwrap()]).await.unwrap();
    let admin = Admin::login(&kdc.url, "admin@EXAMPLE.TEST", BOOTSTRAP_PW).await;

    let db = rusqlite::Connection::open(data.join("kdc.sqlite3")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let url = format!("{}/admin/principals/alice", kdc.url);
    let (authz, _) = ap_authorization(&admin.creds, "DELETE", &url, None, now());
    let authority = kdc.url.strip_prefix("http://").unwrap();
    let mut sock = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!(
        "DELETE /admin/principals/alice HTTP/1.1\r\nhost: {authority}\r\nauthorization: {authz}\r\n\
         x-request-id: e2e-hangup\r\ncontent-length: 0\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    // The KDC is now waiting for the lock inside the delete; the client leaves.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    drop(sock);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    db.execute_batch("COMMIT").unwrap();

    // The delete went through once the lock was free, and was recorded.
    let mut status = 0;
    for _ in 0..50 {
        status = admin.call("GET", "/admin/principals/alice", None).await.0;
        if status == 404 && events(&audit).iter().any(|e| e["request_id"] == "e2e-hangup") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ev = events(&audit);
    assert_eq!(status, 404, "alice is still there: the delete never ran");
    let e = the(&ev, "principal.deleted", "e2e-hangup");
    assert_eq!((&e["outcome"], &e["target"]), (&json!("success"), &json!("alice@EXAMPLE.TEST")), "{e}");
    kdc.terminate().await.unwrap();
}

/// `kdc signing-key rotate` changes what every ticket is signed with: it is
/// recorded (the new key, when it signs, the key it replaces and when that
/// one retires); listing the keys changes nothing and records nothing; an
/// audit trail that cannot be opened stops the rotation before it happens.
#[tokio::test]
async fn a_signing_key_rotation_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    let audit = dir.path().join("audit.log");
    let a = audit.to_str().unwrap();
    let list = || kdc_status(&["signing-key", "list", "--data", d, "--audit-log", a]);
    let (ok, before) = list();
    assert!(ok, "{before}");

    let (ok, out) = kdc_status(&["signing-key", "rotate", "--data", d, "--activate-after", "900", "--audit-log", a]);
    assert!(ok, "{out}");
    let (ok, after) = list();
    assert!(ok, "{after}");
    let kid_of = |listing: &str, state: &str| {
        listing.lines().find(|l| l.split('\t').nth(1) == Some(state)).map(|l| l.split('\t').next().unwrap().to_owned())
    };
    let (new, old) = (kid_of(&after, "next").unwrap(), kid_of(&before, "active").unwrap());

    let ev = events(&audit);
    assert_eq!(ev.len(), 1, "one rotation, and the listings record nothing: {ev:?}");
    let e = &ev[0];
    assert_eq!(
        (&e["event"], &e["outcome"], &e["actor"]),
        (&json!("signing_key.rotated"), &json!("success"), &json!("cli"))
    );
    assert_eq!(e["target"], new.as_str(), "{e}");
    let c = &e["changes"];
    assert_eq!(c["previous"], old.as_str(), "{e}");
    let now = now().as_secs();
    let activates = c["activates_at"].as_u64().unwrap();
    assert!((now + 890..=now + 910).contains(&activates), "{e}");
    assert!(c["previous_retires_at"].as_u64().unwrap() > activates, "{e}");
    assert!(verify(&audit).0);

    // An audit trail that cannot be opened: the rotation does not happen.
    let (ok, out) = kdc_status(&["signing-key", "rotate", "--data", d, "--audit-log", "/nonexistent/dir/audit.log"]);
    assert!(!ok);
    assert!(out.contains("opening the audit log"), "{out}");
    assert_eq!(list().1, after, "the refused rotation changed nothing");
}

/// A writer that can hang: once `stuck` is set, writes block until
/// `release`, like a disk whose `fdatasync` (or a `flock`) never returns.
#[derive(Clone, Default)]
struct Hangable {
    stuck: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Hangable {
    fn set(&self, stuck: bool) {
        *self.stuck.0.lock().unwrap() = stuck;
        self.stuck.1.notify_all();
    }
}

impl std::io::Write for Hangable {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let (lock, cvar) = &*self.stuck;
        drop(cvar.wait_while(lock.lock().unwrap(), |stuck| *stuck).unwrap());
        self.written.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The audit disk hangs (no error, no answer): ticket exchanges are still
/// answered, waiting for their events at most a moment, then not at all
/// once the writer is known to be stuck; admin changes are refused before
/// they are made; once the disk answers, every queued event is written in
/// order and changes work again.
#[tokio::test]
async fn a_hung_audit_disk_does_not_stall_ticket_issuance_and_admin_changes_fail_closed() {
    use kdc_server::{AuditLog, AuditSink, FsyncPolicy, STALL_AFTER};
    use std::time::{Duration, Instant};
    let disk = Hangable::default();
    let audit = AuditLog::with_sink(AuditSink::stream(Box::new(disk.clone())), FsyncPolicy::Always).unwrap();
    let k = TestKdc::start_with_audit(audit).await.unwrap();
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let c = k.client();

    disk.set(true);
    let hung_at = Instant::now();
    let within = |what: &'static str| {
        move |r: Result<_, tokio::time::error::Elapsed>| r.unwrap_or_else(|_| panic!("{what}: no answer in 20 s"))
    };
    let tgt =
        within("login")(tokio::time::timeout(Duration::from_secs(20), c.login("alice@EXAMPLE.TEST", ALICE_PW)).await)
            .unwrap();
    tokio::time::sleep((STALL_AFTER + Duration::from_millis(200)).saturating_sub(hung_at.elapsed())).await;
    for _ in 0..5 {
        let started = Instant::now();
        within("service ticket")(tokio::time::timeout(Duration::from_secs(20), c.service_ticket(&tgt, SVC_A)).await)
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(500), "waited {:?} for a stuck writer", started.elapsed());
    }
    let create = |name: &str| Some(json!({"name": name, "kind": "service"}));
    let (s, body, _) = admin.call("POST", "/admin/principals", create("HTTP/hung.example.test")).await;
    assert_eq!((s, body["type"].as_str()), (503, Some("urn:kdc-http:problem:audit-unavailable")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("refused"), "{body}");
    assert!(k.kdc.find(&"HTTP/hung.example.test@EXAMPLE.TEST".parse().unwrap()).await.unwrap().is_none());
    let metrics = reqwest::get(format!("{}/metrics", k.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("kdc_audit_writer_stalled 1"), "{metrics}");

    // The disk answers again.
    disk.set(false);
    let mut status = 0;
    for _ in 0..50 {
        status = admin.call("POST", "/admin/principals", create("HTTP/hung.example.test")).await.0;
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201);
    let text = String::from_utf8(disk.written.lock().unwrap().clone()).unwrap();
    assert!(kdc_server::verify_audit_trail(text.as_bytes()).is_ok());
    let ev: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let issued = ev.iter().filter(|e| e["event"] == "ticket.issued" && e["actor"] == "alice@EXAMPLE.TEST").count();
    assert_eq!(issued, 6, "the login and five service tickets, queued while the disk hung");
    assert_eq!(ev.last().unwrap()["target"], "HTTP/hung.example.test@EXAMPLE.TEST");
}

/// An admin call refused for a name of 64 KiB (the longest path a request
/// line carries) records the name cut short: the event stays a line the KDC
/// and the `kdc` command can read back, so neither a restart nor the next
/// `kdc principal …` fails on the audit file.
#[tokio::test]
async fn an_oversized_name_cannot_make_the_audit_file_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    let audit = dir.path().join("audit.log");
    let a = audit.to_str().unwrap();
    let kdc = KdcProcess::start_with(&kdc_bin(), &data, &["--audit-log", a]).await.unwrap();
    let mut admin = Admin::login(&kdc.url, "admin@EXAMPLE.TEST", BOOTSTRAP_PW).await;
    admin.http = with_id("e2e-huge");
    let huge = "a".repeat(65_400);
    let (s, body, _) = admin.call("DELETE", &format!("/admin/principals/{huge}"), None).await;
    assert_eq!(s, 400, "{body}");
    kdc.terminate().await.unwrap();

    // The next command and a restart chain on from that line.
    let (ok, out) = kdc_status(&["principal", "disable", "alice", "--data", d, "--audit-log", a]);
    assert!(ok, "{out}");
    let kdc = KdcProcess::start_with(&kdc_bin(), &data, &["--audit-log", a]).await.unwrap();
    kdc.terminate().await.unwrap();
    let (ok, out) = verify(&audit);
    assert!(ok, "{out}");
    let ev = events(&audit);
    let e = the(&ev, "principal.deleted", "e2e-huge");
    assert_eq!((&e["outcome"], &e["problem"]), (&json!("refused"), &json!("malformed-request")), "{e}");
    let target = e["target"].as_str().unwrap();
    assert!(target.starts_with("aaaa") && target.len() <= 300, "{} bytes", target.len());
    assert!(std::fs::read_to_string(&audit).unwrap().lines().all(|l| l.len() < 16 * 1024));
}

/// `kdc ARGS` with `stdin`: (success, standard output, standard error).
/// Fails the test if the command runs for 30 s (a `serve` that should not).
async fn kdc_output(args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(kdc_bin())
        .args(args)
        .env_remove("KDC_MASTER_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kdc {args:?} still running after 30 s"))
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// With `--audit-log -`, standard output carries the chain and nothing
/// else: a `kdc` command's own output goes to standard error; and `kdc serve`
/// does not initialise an empty data directory, whose generated bootstrap
/// password it could only print into the log stream (standard error).
#[tokio::test]
async fn with_the_audit_trail_on_stdout_nothing_else_goes_there_and_no_password_goes_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let check_chain = |stdout: &str, kinds: &[&str]| {
        assert!(kdc_server::verify_audit_trail(stdout.as_bytes()).is_ok(), "not a chain: {stdout}");
        let ev: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(ev.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(), kinds, "{stdout}");
    };

    let empty = dir.path().join("empty");
    let (ok, stdout, stderr) =
        kdc_output(&["serve", "--data", empty.to_str().unwrap(), "--listen", "127.0.0.1:0", "--audit-log", "-"], "")
            .await;
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains("kdc init"), "{stderr}");
    assert!(!stderr.contains("password (shown once"), "{stderr}");
    assert_eq!(stdout, "");

    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (ok, stdout, stderr) = kdc_output(&["init", "--data", d, "--audit-log", "-"], "").await;
    assert!(ok, "{stderr}");
    check_chain(&stdout, &["realm.initialized"]);
    assert!(stderr.contains("password (shown once"), "{stderr}");
    let (ok, stdout, stderr) = kdc_output(
        &["principal", "add", "bob", "--password-stdin", "--data", d, "--audit-log", "-"],
        "bob has a long passphrase 123\n",
    )
    .await;
    assert!(ok, "{stderr}");
    check_chain(&stdout, &["principal.created"]);
    assert!(stderr.contains("created bob@EXAMPLE.TEST"), "{stderr}");
    let (ok, stdout, stderr) = kdc_output(
        &["principal", "rotate", "bob", "--password-stdin", "--data", d, "--audit-log", "-"],
        "bob has a longer passphrase 456\n",
    )
    .await;
    assert!(ok, "{stderr}");
    check_chain(&stdout, &["principal.rotated"]);
    assert!(stderr.contains("rotated bob@EXAMPLE.TEST"), "{stderr}");
    // A listing records nothing: its output is what standard output is for.
    let (ok, stdout, _) = kdc_output(&["principal", "list", "--data", d, "--audit-log", "-"], "").await;
    assert!(ok && stdout.contains("bob@EXAMPLE.TEST"), "{stdout}");
}

/// A name that is not a principal of the realm is not written to the trail:
/// it may be a password typed into the name field. The refusal is still
/// recorded (with `reason`, address and request id); a real principal's
/// failed login still names it.
#[tokio::test]
async fn a_name_that_is_not_a_principal_is_not_recorded() {
    use kdc_server::{AuditDestination, AuditLog, FsyncPolicy};
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let log = AuditLog::start(&AuditDestination::File(audit.clone()), FsyncPolicy::Always).unwrap();
    let k = TestKdc::start_with_audit(log).await.unwrap();

    // A password typed as the name, in the realm and as a "realm".
    let c = ProtoClient::with_http(&k.url, with_id("typed-in-realm"));
    let key = c.derive_key("Hunter2-pw@EXAMPLE.TEST", "x").await.unwrap();
    let req = ProtoClient::initial_request(&key, "Hunter2-pw@EXAMPLE.TEST", now()).unwrap();
    assert_eq!(c.initial(&key, &req).await.unwrap().unwrap_err().status, 401);
    let c = ProtoClient::with_http(&k.url, with_id("typed-as-realm"));
    let req = ProtoClient::initial_request(&key, "P@SSW0RD-TYPED", now()).unwrap();
    let refused = c.initial(&key, &req).await.unwrap().unwrap_err();
    assert!((400..500).contains(&refused.status), "{}", refused.body);
    // A real principal, wrong password: named.
    let c = ProtoClient::with_http(&k.url, with_id("real-wrong-pw"));
    let wrong = c.derive_key("alice@EXAMPLE.TEST", WRONG_PW).await.unwrap();
    let req = ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap();
    assert_eq!(c.initial(&wrong, &req).await.unwrap().unwrap_err().status, 401);

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("Hunter2") && !text.contains("SSW0RD"), "{text}");
    let ev = events(&audit);
    let typed: Vec<&Value> = ev.iter().filter(|e| e["request_id"] == "typed-in-realm").collect();
    assert!(!typed.is_empty());
    for e in typed {
        assert_eq!((e.get("actor"), &e["reason"]), (None, &json!("unknown-principal")), "{e}");
    }
    let e = ev.iter().rfind(|e| e["request_id"] == "typed-as-realm").unwrap();
    assert_eq!((e.get("actor"), &e["event"]), (None, &json!("ticket.refused")), "{e}");
    let e = ev.iter().rfind(|e| e["request_id"] == "real-wrong-pw").unwrap();
    assert_eq!((&e["actor"], &e["reason"]), (&json!("alice@EXAMPLE.TEST"), &json!("wrong-key")), "{e}");
}

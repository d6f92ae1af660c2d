//! The `kdc` command as a real process: restarts, `kill -9`, and the
//! principal commands working against a serving KDC.

use kdc_e2e::*;

use crate::kdc_bin;

/// A realm in `dir/data` made with the `kdc` command: bootstrap admin
/// (password `bootstrap-pw-123`), alice, and service A.
pub(crate) async fn realm_in(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    kdc_command(
        &kdc_bin(),
        &["init", "--data", d, "--realm", "EXAMPLE.TEST", "--admin-password-stdin"],
        Some("bootstrap-pw-123\n"),
    )
    .await
    .unwrap();
    kdc_command(
        &kdc_bin(),
        &["principal", "add", "alice", "--data", d, "--password-stdin", "--role", "reader"],
        Some(&format!("{ALICE_PW}\n")),
    )
    .await
    .unwrap();
    kdc_command(&kdc_bin(), &["principal", "add", SVC_A, "--data", d, "--service"], None).await.unwrap();
    data
}

#[tokio::test]
async fn restart_keeps_principals_keys_and_outstanding_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    let c = ProtoClient::new(&kdc.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let jwks_before = c.get("/.well-known/jwks.json").await.unwrap().body;
    kdc.kill9().await.unwrap();

    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    let c = ProtoClient::new(&kdc.url);
    assert_eq!(c.get("/.well-known/jwks.json").await.unwrap().body, jwks_before);
    // The TGT from before the restart still buys service tickets.
    c.service_ticket(&tgt, SVC_A).await.unwrap();
    c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
}

#[tokio::test]
async fn principal_commands_work_against_a_serving_kdc_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    let c = ProtoClient::new(&kdc.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();

    // Added while serving: seen at once.
    kdc_command(
        &kdc_bin(),
        &["principal", "add", "carol", "--data", d, "--password-stdin"],
        Some("carol's password\n"),
    )
    .await
    .unwrap();
    c.login("carol@EXAMPLE.TEST", "carol's password").await.unwrap();
    kdc_command(&kdc_bin(), &["principal", "add", SVC_B, "--data", d, "--service"], None).await.unwrap();
    c.service_ticket(&tgt, SVC_B).await.unwrap();
    // Disabled while serving: refused at once, even with the older TGT.
    kdc_command(&kdc_bin(), &["principal", "disable", "alice", "--data", d], None).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    assert_eq!(c.tgs(&tgt, &req).await.unwrap().unwrap_err().status, 403);

    // A write acknowledged right before kill -9 is there after the restart.
    kdc_command(&kdc_bin(), &["principal", "add", "dave", "--data", d, "--password-stdin"], Some("dave's password\n"))
        .await
        .unwrap();
    kdc.kill9().await.unwrap();
    let listed = kdc_command(&kdc_bin(), &["principal", "list", "--data", d], None).await.unwrap();
    for name in ["carol@EXAMPLE.TEST", "dave@EXAMPLE.TEST", SVC_B] {
        assert!(listed.contains(name), "{name} lost: {listed}");
    }
    assert!(listed.lines().any(|l| l.starts_with("alice@EXAMPLE.TEST") && l.contains("disabled")), "{listed}");
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    ProtoClient::new(&kdc.url).login("dave@EXAMPLE.TEST", "dave's password").await.unwrap();
}

#[tokio::test]
async fn keytab_export_is_0600_and_holds_every_live_version() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    kdc_command(&kdc_bin(), &["principal", "rotate", SVC_A, "--data", d], None).await.unwrap();
    let out = dir.path().join("a.keytab");
    kdc_command(&kdc_bin(), &["keytab", "export", SVC_A, "--data", d, "--out", out.to_str().unwrap()], None)
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let kt: kdc_proto::Keytab = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(kt.keys.iter().map(|k| k.kvno.0).collect::<Vec<_>>(), vec![2, 1]);
    // Users have no keytab; the master key file is private too.
    assert!(
        kdc_command(&kdc_bin(), &["keytab", "export", "alice", "--data", d, "--out", out.to_str().unwrap()], None)
            .await
            .is_err()
    );
    let mk = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode();
    assert_eq!(mk & 0o777, 0o600);
}

#[tokio::test]
async fn serve_on_an_empty_directory_initialises_and_prints_the_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let mut child = tokio::process::Command::new(kdc_bin())
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("KDC_LOG", "warn")
        .env_remove("KDC_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut password, mut url) = (None, None);
    while url.is_none() {
        let line = lines.next_line().await.unwrap().unwrap();
        if let Some(p) = line.strip_prefix("password (shown once, store it now): ") {
            password = Some(p.to_owned());
        }
        if let Some(i) = line.find("http://") {
            url = Some(line[i..].to_owned());
        }
    }
    let c = ProtoClient::new(&url.unwrap());
    c.login("admin@EXAMPLE.TEST", &password.unwrap()).await.unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // Second start: no new password.
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    drop(kdc);
}

#[tokio::test]
async fn configuration_precedence_is_flags_then_environment_then_kdc_toml_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kdc.toml"), "data = \"from-toml\"\nrealm = \"TOML.TEST\"\n").unwrap();
    let init = |env: Vec<(&'static str, &'static str)>, flags: Vec<&'static str>| {
        let cwd = dir.path().to_owned();
        async move {
            let mut cmd = tokio::process::Command::new(kdc_bin());
            cmd.current_dir(&cwd).arg("init").args(flags).arg("--admin-password-stdin");
            cmd.env_remove("KDC_DATA").env_remove("KDC_REALM").env_remove("KDC_MASTER_KEY");
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            use tokio::io::AsyncWriteExt;
            child.stdin.take().unwrap().write_all(b"admin-pw-123\n").await.unwrap();
            let out = child.wait_with_output().await.unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        }
    };
    assert!(init(vec![], vec![]).await.contains("realm TOML.TEST in from-toml"));
    assert!(
        init(vec![("KDC_DATA", "from-env"), ("KDC_REALM", "ENV.TEST")], vec![])
            .await
            .contains("realm ENV.TEST in from-env")
    );
    let out = init(vec![("KDC_DATA", "from-env2")], vec!["--data", "from-flag", "--realm", "FLAG.TEST"]).await;
    assert!(out.contains("realm FLAG.TEST in from-flag"), "{out}");
    std::fs::remove_file(dir.path().join("kdc.toml")).unwrap();
    assert!(init(vec![], vec![]).await.contains("realm EXAMPLE.TEST in ./kdc-data"));
    for d in ["from-toml", "from-env", "from-flag", "kdc-data"] {
        assert!(dir.path().join(d).join("kdc.sqlite3").exists(), "{d}");
    }
}

#[tokio::test]
async fn logs_hold_no_ticket_authenticator_key_or_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let log = dir.path().join("kdc.log");
    let mut child = tokio::process::Command::new(kdc_bin())
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("KDC_LOG", "debug")
        .env_remove("KDC_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next_line().await.unwrap().unwrap();
        if let Some(i) = line.find("http://") {
            break line[i..].to_owned();
        }
    };
    let c = ProtoClient::new(&url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    c.post("/tickets", &req).await.unwrap();
    c.post("/tickets", &req).await.unwrap(); // a replay: refused and logged
    let wrong = c.derive_key("alice@EXAMPLE.TEST", "a wrong password").await.unwrap();
    c.initial(&wrong, &ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap())
        .await
        .unwrap()
        .unwrap_err();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("/tickets"), "the log should show requests: {text}");
    let secrets = [
        tgt.ticket.clone(),
        st.ticket.clone(),
        req.authenticator.clone(),
        tgt.enc.session_key.to_b64(),
        st.enc.session_key.to_b64(),
        ALICE_PW.to_owned(),
    ];
    for s in secrets {
        // Any 24-character piece of a secret would be a leak.
        let mid = s.len() / 2;
        let piece = &s[mid - 12..mid + 12];
        assert!(!text.contains(piece), "secret material in the log");
    }
}

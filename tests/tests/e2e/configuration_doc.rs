//! `docs/CONFIGURATION.md` against the real thing: every flag of `kdc --help`
//! and `tkt --help` with its environment variable and default, every key the
//! `kdc.toml` parser accepts with its default, every flag of the example
//! service, and nothing the doc names that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::de::{self, Visitor};

use crate::kdc_bin;

fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One documented setting.
#[derive(Debug, Default, Clone)]
struct Row {
    flag: Option<String>,
    env: Option<String>,
    toml: Option<String>,
    default: String,
}

/// The first `` `…` `` span of a cell, if any.
fn code(cell: &str) -> Option<String> {
    let start = cell.find('`')? + 1;
    let end = start + cell[start..].find('`')?;
    Some(cell[start..end].to_owned())
}

/// The rows of every five-column table in the part of the doc under
/// `heading` (up to the next `## `).
fn rows(doc: &str, heading: &str) -> Vec<Row> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no section {heading}"));
    let section = &doc[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Flag") && !l.starts_with("|---"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let flag = code(cells[0]).map(|f| f.split_whitespace().next().unwrap().to_owned());
            if cells.len() == 3 {
                // The example service's table: flag, default, meaning.
                return Row { flag, default: code(cells[1]).unwrap_or_else(|| cells[1].to_owned()), ..Row::default() };
            }
            assert_eq!(cells.len(), 5, "{l}");
            Row {
                flag,
                env: code(cells[1]),
                toml: code(cells[2]),
                default: code(cells[3]).unwrap_or_else(|| cells[3].to_owned()),
            }
        })
        .collect()
}

/// An option as `--help` shows it.
#[derive(Debug, Default)]
struct HelpOption {
    env: Option<String>,
    default: Option<String>,
}

/// Long options of a clap `--help` text, with their `[env: …]` and
/// `[default: …]`.
fn help_options(help: &str) -> BTreeMap<String, HelpOption> {
    let mut out: BTreeMap<String, HelpOption> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let t = line.trim_start();
        let long = t.strip_prefix("-h, ").or(t.strip_prefix("-V, ")).unwrap_or(t);
        if line.starts_with("  ") && long.starts_with("--") {
            let name = long.split([' ', '<']).next().unwrap().to_owned();
            current = Some(name.clone());
            out.entry(name).or_default();
        } else if !line.starts_with("  ") && !line.trim().is_empty() {
            current = None;
        }
        let Some(name) = &current else { continue };
        let entry = out.get_mut(name).unwrap();
        if let Some(i) = line.find("[env: ") {
            // `[env: NAME=value]`, or `[env: NAME]` when clap hides the value
            // (a secret's, like KDC_DATABASE_URL's).
            entry.env = Some(line[i + 6..].split(['=', ']']).next().unwrap().to_owned());
        }
        if let Some(i) = line.find("[default: ") {
            entry.default = Some(line[i + 10..].split(']').next().unwrap().to_owned());
        }
    }
    out.remove("--help");
    out.remove("--version");
    out
}

async fn help_of(bin: PathBuf) -> String {
    help_of_command(bin, &["--help"]).await
}

async fn help_of_command(bin: PathBuf, args: &[&str]) -> String {
    let out = tokio::process::Command::new(bin).args(args).output().await.unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Checks a command's documented flags against its `--help`, both ways.
fn check_flags(command: &str, documented: &[Row], help: &BTreeMap<String, HelpOption>) {
    let doc_flags: BTreeSet<&str> = documented.iter().filter_map(|r| r.flag.as_deref()).collect();
    let help_flags: BTreeSet<&str> = help.keys().map(String::as_str).collect();
    assert_eq!(doc_flags, help_flags, "{command}: flags in docs/CONFIGURATION.md vs --help");
    for row in documented {
        let Some(flag) = &row.flag else { continue };
        let shown = &help[flag];
        assert_eq!(row.env, shown.env, "{command} {flag}: environment variable");
        match &shown.default {
            Some(default) => assert_eq!(&row.default, default, "{command} {flag}: default"),
            // A flag whose help names no default must be one that is off or
            // absent unless given: nothing unchecked slips through.
            None => assert!(
                row.default == "off" || row.default.starts_with("none"),
                "{command} {flag}: --help names no default, the doc says {:?}",
                row.default
            ),
        }
    }
}

#[tokio::test]
async fn every_kdc_and_tkt_flag_is_documented_with_its_environment_variable_and_default() {
    let doc = repo_file("docs/CONFIGURATION.md");
    let kdc_rows = rows(&doc, "## `kdc`");
    check_flags("kdc", &kdc_rows, &help_options(&help_of(kdc_bin()).await));
    let tkt_rows = rows(&doc, "## `tkt`");
    check_flags("tkt", &tkt_rows, &help_options(&help_of(env!("CARGO_BIN_EXE_tkt-under-test").into()).await));
    // `kdc admin`'s own flags: its help lists the global ones too.
    let global = help_options(&help_of(kdc_bin()).await);
    let mut admin = help_options(&help_of_command(kdc_bin(), &["admin", "--help"]).await);
    admin.retain(|flag, _| !global.contains_key(flag));
    check_flags("kdc admin", &rows(&doc, "## `kdc admin`"), &admin);

    // Variables read without a flag must be read by the code that the doc
    // says reads them.
    let sources =
        ["kdc-server/src/cli.rs", "kdc-server/src/config.rs", "kdc-server/src/master_key.rs"].map(repo_file).join("\n");
    for row in kdc_rows.iter().filter(|r| r.flag.is_none()) {
        if let Some(env) = &row.env {
            assert!(sources.contains(&format!("\"{env}\"")), "{env} is documented but not read by kdc");
        }
    }
}

/// Records the field names a `Deserialize` type asks for.
struct FieldNames(std::cell::RefCell<Vec<&'static str>>);

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for &FieldNames {
    type Error = Stop;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.borrow_mut().extend_from_slice(fields);
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn fields_of<T: for<'de> serde::Deserialize<'de>>() -> Vec<&'static str> {
    let names = FieldNames(std::cell::RefCell::new(Vec::new()));
    let _ = T::deserialize(&names);
    names.0.into_inner()
}

#[test]
fn every_kdc_toml_key_is_documented_with_its_default() {
    use kdc_server::Policy;
    use kdc_server::ThrottlePolicy;
    use kdc_server::{CorsConfig, FileConfig};

    let doc = repo_file("docs/CONFIGURATION.md");
    let documented: BTreeMap<String, String> =
        rows(&doc, "## `kdc`").into_iter().filter_map(|r| Some((r.toml?, r.default))).collect();

    // What the parser accepts: top-level keys, and `table.key` in each table.
    let tables: [(&str, Vec<&str>); 3] = [
        ("policy", fields_of::<Policy>()),
        ("throttle", fields_of::<ThrottlePolicy>()),
        ("cors", fields_of::<CorsConfig>()),
    ];
    let mut accepted = BTreeSet::new();
    for top in fields_of::<FileConfig>() {
        match tables.iter().find(|(t, _)| *t == top) {
            Some((table, keys)) => accepted.extend(keys.iter().map(|k| format!("{table}.{k}"))),
            None => {
                accepted.insert(top.to_owned());
            }
        }
    }
    assert!(accepted.len() > 10, "the recorder found too little: {accepted:?}");
    let documented_keys: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(documented_keys, accepted, "kdc.toml keys in docs/CONFIGURATION.md vs the parser");

    // Top-level keys: the documented default is the one the code falls back
    // to (the `--help` text is checked against the doc separately, so the
    // three agree).
    let top_level_defaults = [
        ("data", kdc_server::DEFAULT_DATA_DIR.to_owned()),
        ("listen", kdc_server::DEFAULT_LISTEN.to_owned()),
        ("realm", kdc_server::DEFAULT_REALM.to_owned()),
        ("shutdown_grace_secs", kdc_server::DEFAULT_SHUTDOWN_GRACE_SECS.to_string()),
        ("audit_fsync", format!("{:?}", kdc_server::FsyncPolicy::default()).to_lowercase()),
    ];
    for (key, default) in top_level_defaults {
        assert_eq!(documented[key], default, "{key}: documented default vs the code's");
    }
    let empty = FileConfig::parse("").unwrap();
    for (key, unset) in [
        ("public_url", empty.public_url.is_none()),
        ("tls_cert", empty.tls_cert.is_none()),
        ("tls_key", empty.tls_key.is_none()),
        ("audit_log", empty.audit_log.is_none()),
        ("log_format", empty.log_format.is_none()),
    ] {
        assert!(unset, "{key} has a value in an empty file");
        if key != "log_format" && key != "public_url" {
            assert!(documented[key].starts_with("none"), "{key}: unset means none, the doc says {:?}", documented[key]);
        }
    }

    // Every documented key parses (the file refuses unknown keys), and the
    // tables' defaults are what an empty file gives.
    let defaults = serde_json::json!({
        "policy": serde_json::to_value(FileConfig::parse("").unwrap().policy).unwrap(),
        "throttle": serde_json::to_value(FileConfig::parse("").unwrap().throttle).unwrap(),
        "cors": serde_json::to_value(FileConfig::parse("").unwrap().cors).unwrap(),
    });
    for (key, default) in &documented {
        let Some((table, field)) = key.split_once('.') else { continue };
        let value = &defaults[table][field];
        assert_eq!(default, &value.to_string(), "{key}: documented default");
        let toml =
            format!("[{table}]\n{field} = {}\n", if value.is_array() { "[]".to_owned() } else { value.to_string() });
        FileConfig::parse(&toml).unwrap_or_else(|e| panic!("{key}: {e:#}"));
    }
}

#[test]
fn every_flag_of_the_example_service_is_documented_with_its_default() {
    let doc = repo_file("docs/CONFIGURATION.md");
    let documented: BTreeMap<String, String> =
        rows(&doc, "## `hello_service`").into_iter().filter_map(|r| Some((r.flag?, r.default))).collect();
    // The example's `Args`, read from its source: one `#[arg(long…)]` per field.
    let source = repo_file("examples/hello-service/src/main.rs");
    let args = &source[source.find("struct Args {").unwrap()..];
    let args = &args[..args.find("\n}").unwrap()];
    let mut found = BTreeMap::new();
    let mut default = None;
    for line in args.lines().map(str::trim) {
        if line.starts_with("#[arg(") {
            default = line
                .split("default_value_t = ")
                .nth(1)
                .or_else(|| line.split("default_value = ").nth(1))
                .map(|d| d.trim_end_matches(")]").trim_matches('"').to_owned());
        } else if let Some((field, _)) = line.split_once(": ").filter(|_| !line.starts_with("//")) {
            found.insert(format!("--{}", field.replace('_', "-")), default.take());
        }
    }
    let flags: BTreeSet<&String> = found.keys().collect();
    assert_eq!(documented.keys().collect::<BTreeSet<_>>(), flags, "hello_service flags");
    for (flag, default) in found {
        if let Some(d) = default {
            assert_eq!(documented[&flag], d, "{flag}: default");
        }
    }
}

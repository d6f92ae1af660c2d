//! Principal names: `name[/instance]@REALM`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ProtoError;
use crate::limits::MAX_PRINCIPAL_LEN;

/// A realm: upper-case letters, digits, `.` and `-`, like `EXAMPLE.TEST`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Realm(String);

impl Realm {
    /// The realm as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Realm {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ProtoError::InvalidPrincipal("empty realm"));
        }
        if s.len() > 128 {
            return Err(ProtoError::InvalidPrincipal("realm longer than 128 bytes"));
        }
        if !s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
            return Err(ProtoError::InvalidPrincipal("realm may hold only A-Z, 0-9, '.' and '-'"));
        }
        if s.starts_with('.') || s.ends_with('.') || s.contains("..") {
            return Err(ProtoError::InvalidPrincipal("realm has an empty label"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated principal name: `name[/instance]@REALM`.
///
/// Components hold ASCII letters, digits, `.`, `_` and `-`; the realm is
/// upper-case. Whole names are at most [`MAX_PRINCIPAL_LEN`] bytes.
///
/// ```
/// use kdc_proto::Principal;
/// let p: Principal = "HTTP/api.example.test@EXAMPLE.TEST".parse().unwrap();
/// assert_eq!(p.name(), "HTTP");
/// assert_eq!(p.instance(), Some("api.example.test"));
/// assert_eq!(p.realm().as_str(), "EXAMPLE.TEST");
/// assert!("alice".parse::<Principal>().is_err()); // no realm
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    name: String,
    instance: Option<String>,
    realm: Realm,
}

fn check_component(c: &str) -> Result<(), ProtoError> {
    if c.is_empty() {
        return Err(ProtoError::InvalidPrincipal("empty name component"));
    }
    if !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(ProtoError::InvalidPrincipal("name components may hold only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

impl Principal {
    /// Builds a principal from its parts, validating each.
    pub fn new(name: &str, instance: Option<&str>, realm: Realm) -> Result<Self, ProtoError> {
        check_component(name)?;
        if let Some(i) = instance {
            check_component(i)?;
        }
        let p = Self { name: name.to_owned(), instance: instance.map(str::to_owned), realm };
        if p.to_string().len() > MAX_PRINCIPAL_LEN {
            return Err(ProtoError::InvalidPrincipal("name longer than 255 bytes"));
        }
        Ok(p)
    }

    /// The ticket-granting service of a realm, `krbtgt/REALM@REALM`.
    pub fn ticket_granting(realm: &Realm) -> Self {
        Self { name: "krbtgt".to_owned(), instance: Some(realm.as_str().to_owned()), realm: realm.clone() }
    }

    /// The administration service of a realm, `kadmin/admin@REALM`.
    pub fn admin_service(realm: &Realm) -> Self {
        Self { name: "kadmin".to_owned(), instance: Some("admin".to_owned()), realm: realm.clone() }
    }

    /// Parses `name[/instance][@REALM]`, filling in `default_realm` when the
    /// realm is left out (how the `kdc` command reads a bare NAME).
    pub fn parse_with_default_realm(s: &str, default_realm: &Realm) -> Result<Self, ProtoError> {
        if s.contains('@') { s.parse() } else { Self::parse_parts(s, default_realm.clone()) }
    }

    fn parse_parts(s: &str, realm: Realm) -> Result<Self, ProtoError> {
        if s.len() > MAX_PRINCIPAL_LEN {
            return Err(ProtoError::InvalidPrincipal("name longer than 255 bytes"));
        }
        match s.split_once('/') {
            Some((name, instance)) => {
                if instance.contains('/') {
                    return Err(ProtoError::InvalidPrincipal("more than one '/'"));
                }
                Self::new(name, Some(instance), realm)
            }
            None => Self::new(s, None, realm),
        }
    }

    /// The first component (`HTTP` in `HTTP/host@REALM`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance component, if any (`host` in `HTTP/host@REALM`).
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The realm.
    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    /// Whether this is the ticket-granting service of its own realm.
    pub fn is_ticket_granting(&self) -> bool {
        self.name == "krbtgt" && self.instance.as_deref() == Some(self.realm.as_str())
    }
}

impl FromStr for Principal {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_PRINCIPAL_LEN {
            return Err(ProtoError::InvalidPrincipal("name longer than 255 bytes"));
        }
        let (names, realm) = s.rsplit_once('@').ok_or(ProtoError::InvalidPrincipal("missing '@REALM'"))?;
        Self::parse_parts(names, realm.parse()?)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(i) = &self.instance {
            write!(f, "/{i}")?;
        }
        write!(f, "@{}", self.realm)
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Realm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Realm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> Realm {
        "EXAMPLE.TEST".parse().unwrap()
    }

    #[test]
    fn round_trips_names() {
        for s in ["alice@EXAMPLE.TEST", "HTTP/hello.example.test@EXAMPLE.TEST", "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST"] {
            let p: Principal = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_names() {
        for s in [
            "",
            "@EXAMPLE.TEST",
            "alice@",
            "alice@example.test",
            "a/b/c@R",
            "al ice@R",
            "alice@R..X",
            "/x@R",
            "x/@R",
            "al\u{e9}ce@R",
            "a@b@R",
        ] {
            assert!(s.parse::<Principal>().is_err(), "{s:?} accepted");
        }
        let long = format!("{}@R", "a".repeat(300));
        assert!(long.parse::<Principal>().is_err());
    }

    #[test]
    fn bare_name_gets_default_realm() {
        let p = Principal::parse_with_default_realm("alice", &realm()).unwrap();
        assert_eq!(p.to_string(), "alice@EXAMPLE.TEST");
        let p = Principal::parse_with_default_realm("bob@OTHER.TEST", &realm()).unwrap();
        assert_eq!(p.realm().as_str(), "OTHER.TEST");
    }

    #[test]
    fn ticket_granting_is_recognised() {
        assert!(Principal::ticket_granting(&realm()).is_ticket_granting());
        assert!(!"krbtgt/OTHER.TEST@EXAMPLE.TEST".parse::<Principal>().unwrap().is_ticket_granting());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Parsing is total, and whatever parses prints back to itself.
        #[test]
        fn parse_is_total_and_round_trips(s in "\\PC{0,300}") {
            if let Ok(p) = s.parse::<Principal>() {
                prop_assert_eq!(p.to_string(), s);
            }
        }
    }
}

//! The rules for managing principals, in one place for every caller: the
//! `kdc` command and the admin API both go through these methods, never the
//! store directly, so built-in protection, not-found mapping and role checks
//! cannot differ between them.

use kdc_proto::{Kvno, Principal};

use crate::error::KdcError;
use crate::kdc::{Kdc, check_roles};
use crate::store::{PrincipalRecord, PrincipalUpdate, StoreError};

/// One live key version of a principal (no key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyVersion {
    /// The version.
    pub kvno: Kvno,
    /// When a rotated-out version stops working (Unix seconds); `None` for
    /// the current one.
    pub retires_at: Option<u64>,
}

/// A store error as the caller should see it: a missing name is
/// [`KdcError::PrincipalNotFound`], a taken one [`KdcError::PrincipalExists`].
pub(crate) fn principal_error(e: StoreError) -> KdcError {
    match e {
        StoreError::NotFound => KdcError::PrincipalNotFound,
        StoreError::AlreadyExists => KdcError::PrincipalExists,
        e => e.into(),
    }
}

impl Kdc {
    /// Whether `name` is one of the realm's own principals (`krbtgt/REALM`,
    /// `kadmin/admin`), which can be neither disabled nor deleted.
    pub fn is_builtin(&self, name: &Principal) -> bool {
        name == &Principal::ticket_granting(self.realm()) || name == &Principal::admin_service(self.realm())
    }

    /// A page of principals by name, after `after`, at most `limit`.
    pub async fn list_principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<PrincipalRecord>, KdcError> {
        Ok(self.store().list_principals(after, limit).await?)
    }

    /// The live key versions of a principal at `now_secs`, newest first.
    pub async fn key_versions(&self, principal: &PrincipalRecord, now_secs: u64) -> Result<Vec<KeyVersion>, KdcError> {
        let keys = self.store().live_keys(&principal.id, now_secs).await?;
        Ok(keys.into_iter().map(|k| KeyVersion { kvno: k.kvno, retires_at: k.expires_at }).collect())
    }

    /// Changes a principal's status, roles or lifetime overrides and returns
    /// it as stored. Built-in principals cannot be disabled; roles are
    /// checked like at creation (well-formed, no duplicates).
    pub async fn update_principal(
        &self,
        name: &Principal,
        update: &PrincipalUpdate,
    ) -> Result<PrincipalRecord, KdcError> {
        if update.disabled == Some(true) && self.is_builtin(name) {
            return Err(KdcError::InvalidOperation("built-in principals cannot be disabled"));
        }
        if let Some(roles) = &update.roles {
            check_roles(roles)?;
        }
        self.store().update_principal(&name.to_string(), update).await.map_err(principal_error)?;
        self.get(name).await
    }

    /// Deletes a principal and its keys (its id is never reused). Built-in
    /// principals cannot be deleted, nor can an administrator delete itself
    /// (`requested_by`: the admin API's caller; `None` from the command line,
    /// which runs with the store's own authority).
    pub async fn delete_principal(&self, name: &Principal, requested_by: Option<&Principal>) -> Result<(), KdcError> {
        if self.is_builtin(name) {
            return Err(KdcError::InvalidOperation("built-in principals cannot be deleted"));
        }
        if requested_by == Some(name) {
            return Err(KdcError::InvalidOperation("an administrator cannot delete itself"));
        }
        self.store().delete_principal(&name.to_string()).await.map_err(principal_error)
    }

    /// Lifts a principal's pre-authentication lock-out at `now_secs`: the
    /// throttle forgets its principal-wide counter and its (principal,
    /// address) counters, in the shared throttle for every KDC instance at
    /// once. Per-address counters stay (an address that sprays names stays
    /// refused). An unknown name is [`KdcError::PrincipalNotFound`]; a shared
    /// throttle that cannot be reached is [`KdcError::ReplayCacheUnavailable`]
    /// (nothing is then known to be unlocked).
    pub async fn unlock_principal(&self, name: &Principal, now_secs: u64) -> Result<(), KdcError> {
        self.get(name).await?;
        // The throttle counts the name as `initial_ticket` writes it: canonical.
        self.throttle.unlock(&name.to_string(), now_secs).await.map_err(|_| KdcError::ReplayCacheUnavailable)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use kdc_proto::{Realm, SecretKey, UnixMillis};
    use zeroize::Zeroizing;

    use super::*;
    use crate::kdc::{Credential, PrincipalSpec};
    use crate::master_key::MasterKey;
    use crate::store::MemoryStore;

    const NOW: u64 = 1_700_000_000;

    /// A realm in memory: no files, no sockets.
    async fn kdc() -> Kdc {
        let store = Arc::new(MemoryStore::new());
        let master = MasterKey::new(SecretKey::generate());
        let realm: Realm = "EXAMPLE.TEST".parse().unwrap();
        Kdc::initialize(store.as_ref(), &master, &realm, Zeroizing::new("the admin password".into()), NOW)
            .await
            .unwrap();
        let kdc =
            Kdc::open(store, master, Default::default(), Default::default(), UnixMillis(NOW * 1000)).await.unwrap();
        for (name, credential) in [
            ("alice", Credential::Password(Zeroizing::new("alice password 123".into()))),
            ("HTTP/svc", Credential::Random),
        ] {
            let spec = PrincipalSpec {
                name: kdc.principal_name(name).unwrap(),
                credential,
                roles: vec![],
                max_life_secs: None,
                max_renew_secs: None,
            };
            kdc.create_principal(spec, NOW).await.unwrap();
        }
        kdc
    }

    fn name(kdc: &Kdc, n: &str) -> Principal {
        kdc.principal_name(n).unwrap()
    }

    #[tokio::test]
    async fn built_in_principals_cannot_be_disabled_or_deleted() {
        let kdc = kdc().await;
        for builtin in ["krbtgt/EXAMPLE.TEST", "kadmin/admin"] {
            let p = name(&kdc, builtin);
            assert!(kdc.is_builtin(&p));
            let disable = PrincipalUpdate { disabled: Some(true), ..PrincipalUpdate::default() };
            assert!(matches!(kdc.update_principal(&p, &disable).await, Err(KdcError::InvalidOperation(_))));
            assert!(matches!(kdc.delete_principal(&p, None).await, Err(KdcError::InvalidOperation(_))));
            assert!(!kdc.get(&p).await.unwrap().disabled);
        }
        // Other changes to a built-in are allowed (roles, lifetimes).
        let p = name(&kdc, "kadmin/admin");
        let roles = PrincipalUpdate { roles: Some(vec!["ops".into()]), ..PrincipalUpdate::default() };
        assert_eq!(kdc.update_principal(&p, &roles).await.unwrap().roles, vec!["ops".to_owned()]);
    }

    #[tokio::test]
    async fn updates_check_roles_like_creation_and_map_a_missing_name() {
        let kdc = kdc().await;
        let alice = name(&kdc, "alice");
        for bad in [vec!["a".to_owned(), "a".to_owned()], vec!["bad role!".to_owned()]] {
            let update = PrincipalUpdate { roles: Some(bad), ..PrincipalUpdate::default() };
            assert!(matches!(kdc.update_principal(&alice, &update).await, Err(KdcError::Malformed(_))));
        }
        let spec = PrincipalSpec {
            name: name(&kdc, "bob"),
            credential: Credential::Random,
            roles: vec!["x".into(), "x".into()],
            max_life_secs: None,
            max_renew_secs: None,
        };
        assert!(matches!(kdc.create_principal(spec, NOW).await, Err(KdcError::Malformed(_))), "duplicates at creation");
        let nobody = name(&kdc, "nobody");
        let update = PrincipalUpdate { disabled: Some(true), ..PrincipalUpdate::default() };
        assert!(matches!(kdc.update_principal(&nobody, &update).await, Err(KdcError::PrincipalNotFound)));
        assert!(matches!(kdc.delete_principal(&nobody, None).await, Err(KdcError::PrincipalNotFound)));
        let update = PrincipalUpdate {
            disabled: Some(true),
            roles: Some(vec!["reader".into()]),
            max_life_secs: Some(Some(600)),
            ..PrincipalUpdate::default()
        };
        let rec = kdc.update_principal(&alice, &update).await.unwrap();
        assert_eq!((rec.disabled, rec.roles, rec.max_life_secs), (true, vec!["reader".to_owned()], Some(600)));
    }

    #[tokio::test]
    async fn an_administrator_cannot_delete_itself_and_deletion_is_final() {
        let kdc = kdc().await;
        let admin = name(&kdc, "admin");
        assert!(matches!(kdc.delete_principal(&admin, Some(&admin)).await, Err(KdcError::InvalidOperation(_))));
        let alice = name(&kdc, "alice");
        kdc.delete_principal(&alice, Some(&admin)).await.unwrap();
        assert!(kdc.find(&alice).await.unwrap().is_none());
        assert!(matches!(kdc.delete_principal(&alice, None).await, Err(KdcError::PrincipalNotFound)));
    }

    #[tokio::test]
    async fn an_unlock_lifts_a_lock_out_and_maps_a_missing_name() {
        let kdc = kdc().await;
        let alice = name(&kdc, "alice");
        let attacker = Some("192.0.2.1".parse().unwrap());
        let limit = kdc.throttle.policy().per_principal_address;
        for _ in 0..limit {
            kdc.throttle.begin_guess(&alice.to_string(), attacker, NOW).await.unwrap();
        }
        let refused = |v| matches!(v, crate::throttle::Verdict::Refuse { .. });
        assert!(refused(kdc.throttle.check(&alice.to_string(), attacker, NOW).await.unwrap()));
        kdc.unlock_principal(&alice, NOW).await.unwrap();
        assert!(!refused(kdc.throttle.check(&alice.to_string(), attacker, NOW).await.unwrap()));
        assert_eq!(kdc.throttle.tracked(), 1, "the address counter stays");
        let nobody = name(&kdc, "nobody");
        assert!(matches!(kdc.unlock_principal(&nobody, NOW).await, Err(KdcError::PrincipalNotFound)));
    }

    #[tokio::test]
    async fn an_unlock_with_the_shared_throttle_unreachable_fails_never_pretends() {
        let mut kdc = kdc().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        kdc.share_replay_cache_as(&format!("redis://127.0.0.1:{port}"), "unit-unlock").await.unwrap();
        let alice = name(&kdc, "alice");
        assert!(matches!(kdc.unlock_principal(&alice, NOW).await, Err(KdcError::ReplayCacheUnavailable)));
        let nobody = name(&kdc, "nobody");
        assert!(matches!(kdc.unlock_principal(&nobody, NOW).await, Err(KdcError::PrincipalNotFound)));
    }

    #[tokio::test]
    async fn key_versions_follow_rotation_and_listing_pages_by_name() {
        let kdc = kdc().await;
        let svc = name(&kdc, "HTTP/svc");
        let rec = kdc.get(&svc).await.unwrap();
        let kvno = kdc.rotate(&svc, None, NOW + 10).await.unwrap();
        let versions = kdc.key_versions(&rec, NOW + 10).await.unwrap();
        assert_eq!(versions.iter().map(|v| v.kvno).collect::<Vec<_>>(), vec![kvno, Kvno(1)]);
        assert_eq!(versions[0].retires_at, None);
        let grace = versions[1].retires_at.unwrap();
        assert_eq!(kdc.key_versions(&rec, grace).await.unwrap().len(), 1, "the old version retires after the grace");

        let first = kdc.list_principals(None, 2).await.unwrap();
        let rest = kdc.list_principals(Some(&first[1].name), 100).await.unwrap();
        let mut all: Vec<String> = first.iter().chain(&rest).map(|p| p.name.clone()).collect();
        assert_eq!(all.len(), 5, "{all:?}");
        let sorted = {
            let mut s = all.clone();
            s.sort();
            s
        };
        assert_eq!(all, sorted);
        all.dedup();
        assert_eq!(all.len(), 5);
    }
}

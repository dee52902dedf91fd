//! API keys: listing, revocation (seen at once by another store on the same database), the recorded last use.
//! Every test runs against PostgreSQL and SQLite.

use leadscore_store::test_support::TestDb;
use leadscore_store::{ConnectOptions, DEFAULT_WORKSPACE, Revoked, Store, StoreError};

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both!(
    keys_are_listed_with_prefix_and_never_their_secret,
    a_revoked_key_is_refused_at_once_by_every_store,
    a_bootstrap_key_is_added_once_and_stays_revoked,
);

async fn keys_are_listed_with_prefix_and_never_their_secret(backend: leadscore_store::Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    assert!(s.list_api_keys().await.expect("list").is_empty());
    let acme = s.create_api_key("acme", None).await.expect("key");
    let ops = s.create_api_key("ops", Some(DEFAULT_WORKSPACE)).await.expect("key");
    assert!(acme.key.starts_with(&acme.prefix) && acme.prefix.len() == 12, "{}", acme.prefix);

    let keys = s.list_api_keys().await.expect("list");
    assert_eq!(keys.len(), 2);
    assert_eq!((keys[0].name.as_str(), keys[1].name.as_str()), ("acme", "ops"));
    assert_eq!(keys[0].prefix.as_deref(), Some(acme.prefix.as_str()));
    assert_eq!(keys[1].workspace_id, DEFAULT_WORKSPACE);
    assert!(keys.iter().all(|k| k.last_used_at.is_none() && k.revoked_at.is_none()));
    assert!(!format!("{keys:?}").contains(&acme.key[12..]), "the secret is never listed");

    // A use is recorded (in the background: wait for it).
    assert!(s.workspace_for_key(&ops.key).await.expect("lookup").is_some());
    let mut used = None;
    for _ in 0..100 {
        used = s.list_api_keys().await.expect("list")[1].last_used_at;
        if used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let used = used.expect("last_used_at recorded");
    // Within the minute another use writes nothing.
    assert!(s.workspace_for_key(&ops.key).await.expect("lookup").is_some());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(s.list_api_keys().await.expect("list")[1].last_used_at, Some(used));
}

async fn a_revoked_key_is_refused_at_once_by_every_store(backend: leadscore_store::Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let other = Store::connect_lazy(&db.url, &ConnectOptions::default()).expect("second store");
    let a = s.create_api_key("twin", None).await.expect("key");
    let b = s.create_api_key("twin", None).await.expect("key");
    let c = s.create_api_key("solo", None).await.expect("key");
    // Both stores have just accepted the key.
    assert!(s.workspace_for_key(&a.key).await.expect("lookup").is_some());
    assert!(other.workspace_for_key(&a.key).await.expect("lookup").is_some());

    match s.revoke_api_key("twin").await {
        Err(StoreError::AmbiguousKey { count: 2, .. }) => {}
        other => panic!("expected AmbiguousKey, got {other:?}"),
    }
    assert_eq!(s.revoke_api_key("lsk_nope").await.expect("revoke"), None);
    match s.revoke_api_key(&a.prefix).await.expect("revoke") {
        Some(Revoked::Now(k)) => assert!(k.name == "twin" && k.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.workspace_for_key(&a.key).await.expect("lookup"), None, "refused by the same store");
    assert_eq!(other.workspace_for_key(&a.key).await.expect("lookup"), None, "and by another one");
    assert!(other.workspace_for_key(&b.key).await.expect("lookup").is_some(), "the twin still works");
    assert!(matches!(s.revoke_api_key(&a.prefix).await, Ok(Some(Revoked::Already(_)))));

    // Revoked by name once the name is unique among the keys; revoked keys no longer enable auth.
    assert!(s.auth_enabled().await.expect("auth"));
    assert!(matches!(s.revoke_api_key("solo").await, Ok(Some(Revoked::Now(_)))));
    assert!(matches!(s.revoke_api_key(&b.id).await, Ok(Some(Revoked::Now(_)))));
    assert_eq!(s.workspace_for_key(&c.key).await.expect("lookup"), None);
    assert!(!s.auth_enabled().await.expect("auth"), "only revoked keys left");
    assert_eq!(s.list_api_keys().await.expect("list").iter().filter(|k| k.revoked_at.is_some()).count(), 3);
    other.close().await;
}

async fn a_bootstrap_key_is_added_once_and_stays_revoked(backend: leadscore_store::Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let key = "boot_0123456789abcdef0123456789abcdef";
    assert!(!s.auth_enabled().await.expect("auth"));
    // Two replicas starting at once: one adds it.
    let (a, b) = tokio::join!(s.ensure_api_key("bootstrap", key), s.ensure_api_key("bootstrap", key));
    assert_eq!([a.expect("ensure"), b.expect("ensure")].iter().filter(|added| **added).count(), 1);
    assert!(s.auth_enabled().await.expect("auth"));
    assert_eq!(s.workspace_for_key(key).await.expect("lookup").as_deref(), Some(DEFAULT_WORKSPACE));
    let keys = s.list_api_keys().await.expect("list");
    assert_eq!((keys.len(), keys[0].prefix.as_deref()), (1, Some(&key[..12])));
    // Revoked, then a restart ensures it again: it stays refused.
    assert!(matches!(s.revoke_api_key("bootstrap").await.expect("revoke"), Some(Revoked::Now(_))));
    assert!(!s.ensure_api_key("bootstrap", key).await.expect("ensure"));
    assert_eq!(s.workspace_for_key(key).await.expect("lookup"), None);
}

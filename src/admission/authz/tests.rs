use super::*;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: Some(name.into()),
        groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        ..Default::default()
    }
}

#[test]
fn the_question_carries_the_whole_identity() {
    let mut who = user("alice", &["team-a", "system:authenticated"]);
    who.uid = Some("u-1".into());
    who.extra = Some(BTreeMap::from([("scopes".into(), vec!["x".into()])]));
    let spec = review_spec(&who, "team-a", "creds");
    assert_eq!(spec.user.as_deref(), Some("alice"));
    assert_eq!(spec.uid.as_deref(), Some("u-1"));
    assert_eq!(spec.groups.as_ref().map(Vec::len), Some(2));
    assert!(spec.extra.is_some());
    let attrs = spec.resource_attributes.expect("resource attributes");
    assert_eq!(attrs.verb.as_deref(), Some("get"));
    assert_eq!(attrs.resource.as_deref(), Some("secrets"));
    assert_eq!(attrs.group.as_deref(), Some(""));
    assert_eq!(attrs.name.as_deref(), Some("creds"));
    assert_eq!(attrs.namespace.as_deref(), Some("team-a"));
}

#[test]
fn cache_keys_tell_identities_and_secrets_apart() {
    let a = CacheKey::new(&user("alice", &["x", "y"]), "ns", "s");
    // Group order does not matter; user, groups, namespace and name do.
    assert_eq!(a, CacheKey::new(&user("alice", &["y", "x"]), "ns", "s"));
    assert_ne!(a, CacheKey::new(&user("bob", &["x", "y"]), "ns", "s"));
    assert_ne!(a, CacheKey::new(&user("alice", &["x"]), "ns", "s"));
    assert_ne!(a, CacheKey::new(&user("alice", &["x", "y"]), "other", "s"));
    assert_ne!(a, CacheKey::new(&user("alice", &["x", "y"]), "ns", "t"));
    // A pool named like the Secret is another question.
    assert_ne!(
        a,
        CacheKey::for_pool_use(&user("alice", &["x", "y"]), "ns", "s")
    );
}

#[test]
fn the_pool_question_is_use_on_that_pool() {
    let spec = pool_use_spec(&user("alice", &["team-a"]), "team-a", "warm");
    assert_eq!(spec.user.as_deref(), Some("alice"));
    let attrs = spec.resource_attributes.expect("resource attributes");
    assert_eq!(attrs.verb.as_deref(), Some("use"));
    assert_eq!(attrs.group.as_deref(), Some("cyberdesk.io"));
    assert_eq!(attrs.resource.as_deref(), Some("cyberdeskpools"));
    assert_eq!(attrs.name.as_deref(), Some("warm"));
    assert_eq!(attrs.namespace.as_deref(), Some("team-a"));
}

#[test]
fn the_bucket_gives_its_burst_then_its_rate() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(10, 3, t0);
    assert!((0..3).all(|_| bucket.take(t0)));
    assert!(!bucket.take(t0));
    // A tenth of a second later: one more.
    let t1 = t0 + Duration::from_millis(100);
    assert!(bucket.take(t1));
    assert!(!bucket.take(t1));
    // Long idle: back to the burst, never more.
    let t2 = t1 + Duration::from_secs(60);
    assert_eq!((0..10).filter(|_| bucket.take(t2)).count(), 3);
}

/// A reviewer whose apiserver is unreachable: a check that is asked fails, one that is
/// not asked says why.
fn unreachable_reviewer(metrics: &Metrics) -> SubjectAccessReviewer {
    let url: axum::http::Uri = "http://127.0.0.1:1".parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    SubjectAccessReviewer::new(
        client,
        Duration::from_secs(2),
        Duration::from_secs(5),
        metrics.clone(),
    )
    .with_rate_limit(1, 2)
}

#[tokio::test]
async fn misses_past_the_burst_are_not_asked_and_say_why() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let reviewer = unreachable_reviewer(&metrics);
    let count = |result: &str| {
        metrics
            .secret_access_reviews
            .with_label_values(&[result, "api"])
            .get()
    };
    // Two fresh identities use the burst: both are asked (and fail: no apiserver).
    for who in ["forged-1", "forged-2"] {
        let asked = reviewer.may_get_secret(&user(who, &[]), "ns", "s").await;
        assert!(matches!(asked, Err(AccessError::Api(_))), "{asked:?}");
    }
    let refused = reviewer
        .may_get_secret(&user("forged-3", &[]), "ns", "s")
        .await;
    let Err(e @ AccessError::Throttled { .. }) = refused else {
        panic!("not throttled: {refused:?}");
    };
    assert!(e.to_string().contains("too many access checks"), "{e}");
    assert_eq!(count("error"), 2);
    assert_eq!(count("throttled"), 1);
}

#[test]
fn entries_expire_and_the_cache_stays_bounded() {
    let mut cache = TtlCache {
        ttl: Duration::from_secs(5),
        entries: HashMap::new(),
    };
    let t0 = Instant::now();
    let key = CacheKey::new(&user("alice", &[]), "ns", "s");
    cache.put(key.clone(), Access::Allowed, t0);
    assert_eq!(
        cache.get(&key, t0 + Duration::from_secs(4)),
        Some(Access::Allowed)
    );
    assert_eq!(cache.get(&key, t0 + Duration::from_secs(5)), None);
    for i in 0..CACHE_CAPACITY + 10 {
        let k = CacheKey::new(&user(&format!("u{i}"), &[]), "ns", "s");
        cache.put(k, Access::Denied(String::new()), t0);
    }
    assert!(cache.entries.len() <= CACHE_CAPACITY);
}

//! May the requester read the Secret their desk names? The operator hands a VM user data
//! from `spec.userDataSecretRef`; without this check, anyone allowed to create a Cyberdesk
//! could have any Secret of the namespace copied into a VM (a confused deputy). Asked with
//! a SubjectAccessReview for the request's `userInfo`, answered from a short-lived cache,
//! and failing closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::metrics::Metrics;

/// Most answers kept; past it, expired ones are dropped and then, if still full, all.
const CACHE_CAPACITY: usize = 10_000;

/// The apiserver's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Not allowed; the authorizer's reason, possibly empty.
    Denied(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("no apiserver to ask")]
    Unavailable,
    #[error("the authorizer could not evaluate the request: {0}")]
    Evaluation(String),
    #[error(
        "too many access checks right now: the operator asks the apiserver at most {burst} at once and {rate} a second (--access-review-rate), and did not ask this one"
    )]
    Throttled { rate: u32, burst: u32 },
}

/// Checks that miss the cache, bounded: `burst` at once, refilled at `rate` a second. A
/// forged review with a fresh identity each time misses the cache, and each miss would be
/// a SubjectAccessReview in the operator's own priority-and-fairness flow, the one its
/// Lease renewals use.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate,
            burst: burst.max(1),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
}

/// Answers "may this user `get` Secret `name` in `namespace`?".
pub trait SecretAccess: Send + Sync {
    fn may_get_secret<'a>(
        &'a self,
        who: &'a UserInfo,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>>;

    /// Answers "may this user `use` CyberdeskPool `pool` in `namespace`?". Without an
    /// apiserver to ask there is no answer, so a pooled desk is refused.
    fn may_use_pool<'a>(
        &'a self,
        _who: &'a UserInfo,
        _namespace: &'a str,
        _pool: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>> {
        Box::pin(async { Err(AccessError::Unavailable) })
    }
}

/// Everything an answer depends on — the whole identity (extra included, since an
/// authorizer may look at it) and the Secret — as a SHA-256 of its canonical JSON: a few
/// bytes per entry however large a (possibly forged) review's groups are, and no two
/// identities share a key.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CacheKey([u8; 32]);

impl CacheKey {
    fn new(who: &UserInfo, namespace: &str, name: &str) -> Self {
        Self::of(who, &[namespace, name])
    }

    /// The pool question's key: the same identity digest with the question in it, so a
    /// pool and a Secret of the same name never share an answer.
    fn for_pool_use(who: &UserInfo, namespace: &str, pool: &str) -> Self {
        Self::of(who, &[namespace, pool, POOL_USE])
    }

    fn of(who: &UserInfo, question: &[&str]) -> Self {
        let mut groups = who.groups.clone().unwrap_or_default();
        groups.sort();
        let extra: BTreeMap<_, _> = who.extra.clone().unwrap_or_default();
        let canonical = serde_json::json!([who.username, who.uid, groups, extra, question]);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.to_string().as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Self(key)
    }
}

/// The verb a pooled desk's creator needs on its pool (`cyberdeskpools/use`): the pool
/// hands its template and user data to every desk that names it, so naming it is a grant
/// its owner makes, as RBAC's `bind`/`escalate` and PodSecurityPolicy's `use` are.
pub const POOL_USE: &str = "use";

/// The pool question, for exactly the identity the apiserver authenticated.
pub fn pool_use_spec(who: &UserInfo, namespace: &str, pool: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: who.username.clone(),
        uid: who.uid.clone(),
        groups: who.groups.clone(),
        extra: who.extra.clone(),
        resource_attributes: Some(ResourceAttributes {
            namespace: Some(namespace.into()),
            verb: Some(POOL_USE.into()),
            group: Some("cyberdesk.io".into()),
            resource: Some("cyberdeskpools".into()),
            name: Some(pool.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A small map whose entries live `ttl`: admission must stay fast when one user applies a
/// burst of desks, while a revoked permission takes effect within seconds.
struct TtlCache {
    ttl: Duration,
    entries: HashMap<CacheKey, (Instant, Access)>,
}

impl TtlCache {
    fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Access> {
        match self.entries.get(key) {
            Some((at, access)) if now.duration_since(*at) < self.ttl => Some(access.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, key: CacheKey, access: Access, now: Instant) {
        if self.entries.len() >= CACHE_CAPACITY {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (at, _)| now.duration_since(*at) < ttl);
            if self.entries.len() >= CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now, access));
    }
}

/// The real thing: SubjectAccessReviews against the apiserver.
pub struct SubjectAccessReviewer {
    client: kube::Client,
    timeout: Duration,
    cache: Mutex<TtlCache>,
    metrics: Metrics,
    /// `None`: every miss is asked.
    misses: Option<Mutex<TokenBucket>>,
}

impl SubjectAccessReviewer {
    /// `ttl` zero turns the cache off.
    pub fn new(client: kube::Client, timeout: Duration, ttl: Duration, metrics: Metrics) -> Self {
        Self {
            client,
            timeout,
            cache: Mutex::new(TtlCache {
                ttl,
                entries: HashMap::new(),
            }),
            metrics,
            misses: None,
        }
    }

    /// Bounds the checks that miss the cache to `burst` at once and `rate` a second
    /// (`rate` 0: no bound).
    pub fn with_rate_limit(mut self, rate: u32, burst: u32) -> Self {
        self.misses = (rate > 0).then(|| Mutex::new(TokenBucket::new(rate, burst, Instant::now())));
        self
    }

    /// May one more miss be asked now? The error says why not.
    fn may_ask(&self) -> Result<(), AccessError> {
        let Some(bucket) = &self.misses else {
            return Ok(());
        };
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        if bucket.take(Instant::now()) {
            return Ok(());
        }
        Err(AccessError::Throttled {
            rate: bucket.rate,
            burst: bucket.burst,
        })
    }

    fn count(&self, result: &Result<Access, AccessError>, source: &str) {
        let label = match result {
            Ok(Access::Allowed) => "allowed",
            Ok(Access::Denied(_)) => "denied",
            Err(AccessError::Throttled { .. }) => "throttled",
            Err(_) => "error",
        };
        self.metrics
            .secret_access_reviews
            .with_label_values(&[label, source])
            .inc();
    }

    async fn ask(&self, spec: SubjectAccessReviewSpec) -> Result<Access, AccessError> {
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| AccessError::Timeout(self.timeout))??;
        let status = answer.status.unwrap_or_default();
        if status.allowed && status.denied != Some(true) {
            return Ok(Access::Allowed);
        }
        // An authorizer that failed to evaluate said nothing about the user: not a denial to
        // cache, a check that could not be made.
        match status.evaluation_error.filter(|e| !e.is_empty()) {
            Some(error) if status.denied != Some(true) => Err(AccessError::Evaluation(error)),
            _ => Ok(Access::Denied(status.reason.unwrap_or_default())),
        }
    }
}

/// The question, for exactly the identity the apiserver authenticated.
pub fn review_spec(who: &UserInfo, namespace: &str, name: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: who.username.clone(),
        uid: who.uid.clone(),
        groups: who.groups.clone(),
        extra: who.extra.clone(),
        resource_attributes: Some(ResourceAttributes {
            namespace: Some(namespace.into()),
            verb: Some("get".into()),
            group: Some(String::new()),
            resource: Some("secrets".into()),
            name: Some(name.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl SubjectAccessReviewer {
    /// One check: the cache, else a review (within the rate), its answer cached.
    async fn check(
        &self,
        key: CacheKey,
        spec: SubjectAccessReviewSpec,
    ) -> Result<Access, AccessError> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key, Instant::now()));
        if let Some(access) = cached {
            let result = Ok(access);
            self.count(&result, "cache");
            return result;
        }
        let result = match self.may_ask() {
            Ok(()) => self.ask(spec).await,
            Err(throttled) => Err(throttled),
        };
        self.count(&result, "api");
        if let Ok(access) = &result
            && let Ok(mut cache) = self.cache.lock()
            && !cache.ttl.is_zero()
        {
            cache.put(key, access.clone(), Instant::now());
        }
        result
    }
}

impl SecretAccess for SubjectAccessReviewer {
    fn may_get_secret<'a>(
        &'a self,
        who: &'a UserInfo,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>> {
        Box::pin(self.check(
            CacheKey::new(who, namespace, name),
            review_spec(who, namespace, name),
        ))
    }

    fn may_use_pool<'a>(
        &'a self,
        who: &'a UserInfo,
        namespace: &'a str,
        pool: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>> {
        Box::pin(self.check(
            CacheKey::for_pool_use(who, namespace, pool),
            pool_use_spec(who, namespace, pool),
        ))
    }
}

/// For a webhook with no apiserver to ask (benchmarks, tests): every check fails, so every
/// desk that names a Secret is denied.
pub struct NoAccessReviews;

impl SecretAccess for NoAccessReviews {
    fn may_get_secret<'a>(
        &'a self,
        _who: &'a UserInfo,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>> {
        Box::pin(async { Err(AccessError::Unavailable) })
    }
}

#[cfg(test)]
mod tests;

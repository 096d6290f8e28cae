//! The VM template catalog: which ConfigMaps of the operator's namespace are templates, and
//! who may use each. Both the validating webhook (every replica) and the reconciler (the
//! leader) judge a desk's template with [`resolve`], so an admin who disables the webhooks
//! does not also disable the rule.
//!
//! A ConfigMap is a template only when it carries the label `cyberdesk.io/template: "true"`;
//! the annotation `cyberdesk.io/allowed-namespaces` (comma list of names or globs) limits
//! where it may be used, and its absence means everywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::watch_backoff;
use crate::model::names;
use crate::template::{BUILTIN_TEMPLATE, SECRET_REF_KEYS, USER_DATA_SECRET_NAME};
use crate::text::truncate;

/// Readiness gate: closed until the template ConfigMaps have been listed once.
pub const GATE_TEMPLATES: &str = "templates";

/// The template a desk gets, as far as access rules go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedTemplate {
    /// The ConfigMap name, or `None` for the operator's built-in template.
    pub configmap: Option<String>,
    /// The template text (YAML).
    pub text: String,
}

impl ResolvedTemplate {
    /// Does the template refer to `${variable}`? A plain text search: substitution only
    /// happens in string values, so at worst a comment makes a check stricter.
    pub fn uses(&self, variable: &str) -> bool {
        self.text.contains(&format!("${{{variable}}}"))
    }

    /// Why `key` cannot hold the user data for this template: KubeVirt reads only
    /// `userdata`/`userData` from a `cloudInitNoCloud.secretRef` Secret.
    pub fn secret_key_problem(&self, key: &str) -> Option<String> {
        (self.uses(USER_DATA_SECRET_NAME) && !SECRET_REF_KEYS.contains(&key)).then(|| {
            format!(
                "{} hands the Secret to KubeVirt by reference (cloudInitNoCloud.secretRef), which reads only the key \"userdata\" or \"userData\", not {:?}",
                self.describe(),
                truncate(key, 63)
            )
        })
    }

    /// How the template is named in messages.
    pub fn describe(&self) -> String {
        match &self.configmap {
            Some(name) => format!("VM template {name}"),
            None => "the built-in VM template".into(),
        }
    }
}

/// Why a desk may not have the template it asks for (or gets by default).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateRefusal {
    #[error(
        "VM template {name} not found: a template is a ConfigMap in namespace {namespace} labelled {label}=true"
    )]
    NotFound {
        name: String,
        namespace: String,
        label: &'static str,
    },
    #[error("VM template {name} may not be used in namespace {namespace} (allowed: {allowed})")]
    NotAllowed {
        name: String,
        namespace: String,
        allowed: String,
    },
    #[error("ConfigMap {name} has no key {key}")]
    NoText { name: String, key: &'static str },
}

/// Is `namespace` one of the comma-separated names or globs in `allowed`? Empty entries
/// are ignored, and a pattern that is not a valid glob matches only itself.
pub fn namespace_allowed(allowed: &str, namespace: &str) -> bool {
    allowed
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| match glob::Pattern::new(p) {
            Ok(pattern) => pattern.matches(namespace),
            Err(_) => p == namespace,
        })
}

/// Does this ConfigMap carry the template label?
pub fn is_template(cm: &ConfigMap) -> bool {
    cm.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_TEMPLATE))
        .is_some_and(|v| v == "true")
}

/// The template a desk in `namespace` gets: the one it names, else `default_name`, else
/// the built-in one; refused when it is not a template or not allowed there. `lookup`
/// finds a ConfigMap by name in the operator's namespace.
pub fn resolve(
    requested: Option<&str>,
    default_name: &str,
    namespace: &str,
    operator_namespace: &str,
    lookup: impl Fn(&str) -> Option<ConfigMap>,
) -> Result<ResolvedTemplate, TemplateRefusal> {
    let name = requested.unwrap_or(default_name);
    // Names and namespaces are echoed in messages; a forged review may carry anything.
    let (shown, namespace) = (truncate(name, 253), truncate(namespace, 63));
    let Some(cm) = lookup(name).filter(is_template) else {
        if requested.is_some() {
            return Err(TemplateRefusal::NotFound {
                name: shown,
                namespace: operator_namespace.into(),
                label: names::LABEL_TEMPLATE,
            });
        }
        return Ok(ResolvedTemplate {
            configmap: None,
            text: BUILTIN_TEMPLATE.into(),
        });
    };
    if let Some(allowed) = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_ALLOWED_NAMESPACES))
        && !namespace_allowed(allowed, &namespace)
    {
        return Err(TemplateRefusal::NotAllowed {
            name: shown,
            namespace,
            allowed: truncate(allowed, 200),
        });
    }
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(names::TEMPLATE_KEY))
        .ok_or_else(|| TemplateRefusal::NoText {
            name: shown.clone(),
            key: names::TEMPLATE_KEY,
        })?;
    Ok(ResolvedTemplate {
        configmap: Some(name.into()),
        text: text.clone(),
    })
}

/// The watched template ConfigMaps of the operator's namespace, shared by the webhook and
/// the reconciler (one watch per process).
#[derive(Clone)]
pub struct Catalog {
    store: Store<ConfigMap>,
    namespace: String,
    default_name: String,
    changes: watch::Receiver<u64>,
    synced: Arc<AtomicBool>,
}

impl Catalog {
    /// Resolves the template for a desk in `namespace` that asks for `requested`.
    pub fn resolve(
        &self,
        requested: Option<&str>,
        namespace: &str,
    ) -> Result<ResolvedTemplate, TemplateRefusal> {
        resolve(
            requested,
            &self.default_name,
            namespace,
            &self.namespace,
            |name| {
                self.store
                    .get(&ObjectRef::new(name).within(&self.namespace))
                    .map(|cm| cm.as_ref().clone())
            },
        )
    }

    /// Has the first list completed? Before it, every template would look missing.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Returns once the first list is in (or never, if the watch task ends before it).
    pub async fn wait_synced(&self) {
        let mut rx = self.changes.clone();
        // `synced` is set before the tick that announces it, so no wake-up is lost.
        while !self.is_synced() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// A tick for every change to a template ConfigMap (the reconciler re-checks all desks).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let rx = self.changes.clone();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// A catalog fixed at `configmaps`, for tests.
    pub fn fixed(namespace: &str, default_name: &str, configmaps: Vec<ConfigMap>) -> Self {
        let (store, mut writer) = reflector::store();
        for cm in configmaps {
            let mut cm = cm;
            cm.metadata.namespace = Some(namespace.into());
            writer.apply_watcher_event(&watcher::Event::Apply(cm));
        }
        let (_tx, changes) = watch::channel(1);
        Self {
            store,
            namespace: namespace.into(),
            default_name: default_name.into(),
            changes,
            synced: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// Starts the watch of template ConfigMaps (label selector, so other ConfigMaps of the
/// namespace are never cached) and calls `listed_once` after the first list (the wiring opens
/// [`GATE_TEMPLATES`] with it).
pub fn start(
    client: kube::Client,
    namespace: &str,
    default_name: &str,
    listed_once: impl FnOnce() + Send + 'static,
    stop: CancellationToken,
) -> (Catalog, tokio::task::JoinHandle<()>) {
    let mut listed_once = Some(listed_once);
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let (store, writer) = reflector::store();
    let (tx, changes) = watch::channel(0u64);
    let synced = Arc::new(AtomicBool::new(false));
    let selector = format!("{}=true", names::LABEL_TEMPLATE);
    let config = watcher::Config::default().labels(&selector);
    let events = reflector::reflector(writer, watcher(api, config)).backoff(watch_backoff());
    let (first_list, task_synced) = (store.clone(), synced.clone());
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        let mut first_list = std::pin::pin!(first_list.wait_until_ready());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                listed = &mut first_list, if !task_synced.load(Ordering::Acquire) => {
                    if listed.is_err() {
                        return;
                    }
                    task_synced.store(true, Ordering::Release);
                    if let Some(listed) = listed_once.take() {
                        listed();
                    }
                    tx.send_modify(|n| *n += 1);
                    tracing::info!("VM templates loaded");
                }
                event = events.next() => match event {
                    // A (re-)list is in the store only at InitDone: tick then, not per object.
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => {
                        tx.send_modify(|n| *n += 1)
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "VM template watch failed; retrying"),
                    None => return,
                },
            }
        }
    });
    let catalog = Catalog {
        store,
        namespace: namespace.into(),
        default_name: default_name.into(),
        changes,
        synced,
    };
    (catalog, task)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cm(name: &str, labelled: bool, allowed: Option<&str>) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        if labelled {
            cm.metadata.labels = Some(BTreeMap::from([(
                names::LABEL_TEMPLATE.to_string(),
                "true".to_string(),
            )]));
        }
        if let Some(a) = allowed {
            cm.metadata.annotations = Some(BTreeMap::from([(
                names::ANNOTATION_ALLOWED_NAMESPACES.to_string(),
                a.to_string(),
            )]));
        }
        cm.data = Some(BTreeMap::from([(
            names::TEMPLATE_KEY.to_string(),
            format!("# {name}\nsecret: ${{user_data_secret_name}}\n"),
        )]));
        cm
    }

    fn catalog() -> Catalog {
        Catalog::fixed(
            "cyberdesk-system",
            "default-tpl",
            vec![
                cm("gpu", true, Some("team-a, lab-*")),
                cm("open", true, None),
                cm("unlabelled", false, None),
            ],
        )
    }

    #[test]
    fn globs_and_names_select_namespaces() {
        assert!(namespace_allowed("team-a,lab-*", "lab-7"));
        assert!(namespace_allowed(" team-a , team-b ", "team-b"));
        assert!(!namespace_allowed("team-a,lab-*", "team-b"));
        assert!(!namespace_allowed("", "team-a"));
        assert!(!namespace_allowed(",,", "team-a"));
        // Not a valid glob: matches only itself.
        assert!(namespace_allowed("[team", "[team"));
        assert!(!namespace_allowed("[team", "team"));
    }

    #[test]
    fn allowed_templates_resolve_with_their_text() {
        let c = catalog();
        let t = c.resolve(Some("gpu"), "team-a").expect("allowed");
        assert_eq!(t.configmap.as_deref(), Some("gpu"));
        assert!(t.uses("user_data_secret_name"));
        assert!(!t.uses("user_data_base64"));
        assert!(c.resolve(Some("gpu"), "lab-1").is_ok());
        assert!(c.resolve(Some("open"), "anywhere").is_ok());
    }

    #[test]
    fn forbidden_and_unknown_templates_are_refused() {
        let c = catalog();
        assert!(matches!(
            c.resolve(Some("gpu"), "team-b"),
            Err(TemplateRefusal::NotAllowed { namespace, .. }) if namespace == "team-b"
        ));
        // Without the label a ConfigMap is not a template, whatever its content.
        let refused = c.resolve(Some("unlabelled"), "team-a").unwrap_err();
        assert!(matches!(refused, TemplateRefusal::NotFound { .. }));
        assert!(refused.to_string().contains("cyberdesk.io/template=true"));
        assert!(matches!(
            c.resolve(Some("nope"), "team-a"),
            Err(TemplateRefusal::NotFound { .. })
        ));
    }

    #[test]
    fn missing_default_falls_back_to_the_builtin() {
        let t = catalog().resolve(None, "team-b").expect("builtin");
        assert_eq!(t.configmap, None);
        assert_eq!(t.text, BUILTIN_TEMPLATE);
    }

    #[test]
    fn the_default_template_obeys_its_annotation_too() {
        let c = Catalog::fixed(
            "cyberdesk-system",
            "default-tpl",
            vec![cm("default-tpl", true, Some("team-a"))],
        );
        assert!(c.resolve(None, "team-a").is_ok());
        assert!(matches!(
            c.resolve(None, "team-b"),
            Err(TemplateRefusal::NotAllowed { .. })
        ));
    }
}

//! The ready call's URL: a template with `{name}` and `{namespace}` (pure).

/// A checked `--ready-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyUrl(String);

const PLACEHOLDERS: [&str; 2] = ["{name}", "{namespace}"];

impl ReadyUrl {
    /// Accepts an http(s) URL whose only `{…}` are `{name}` and `{namespace}`.
    pub fn parse(template: &str) -> Result<Self, String> {
        if !(template.starts_with("http://") || template.starts_with("https://")) {
            return Err("must start with http:// or https://".into());
        }
        let mut rest = template.to_string();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "x");
        }
        if rest.contains('{') || rest.contains('}') {
            return Err("the only placeholders are {name} and {namespace}".into());
        }
        rest.parse::<hyper::Uri>()
            .map_err(|e| format!("is not a URL: {e}"))?;
        Ok(Self(template.to_string()))
    }

    /// Does the URL tell desks apart by the desk name alone (no `{namespace}`)?
    pub fn keyed_by_name(&self) -> bool {
        !self.0.contains("{namespace}")
    }

    /// The URL for one desk. Desk and namespace names are DNS labels, safe in a URL.
    pub fn for_desk(&self, namespace: &str, name: &str) -> String {
        self.0
            .replace("{name}", name)
            .replace("{namespace}", namespace)
    }
}

#[cfg(test)]
mod tests;

//! Counting requests in the apiserver's audit log: who asked for what, between two marks.
//! The apiserver's own `apiserver_request_total` has no user label; the audit log does, so
//! the operator's requests can be told from the simulator's and the benchmark's.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::Deserialize;

/// The verbs that change something.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// The audit log from a mark onwards.
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

/// One request: verb and resource (with `/subresource`), e.g. `patch cyberdesks/status`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub verb: String,
    pub resource: String,
}

/// Requests counted per user.
#[derive(Debug, Default)]
pub struct Requests {
    by_user: BTreeMap<String, BTreeMap<Request, u64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    verb: String,
    user: User,
    object_ref: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
}

impl AuditLog {
    /// Starts counting from the log's current end.
    pub fn at_end(path: PathBuf) -> Self {
        let mut log = Self { path, offset: 0 };
        log.mark();
        log
    }

    /// Moves the mark to the log's current end.
    pub fn mark(&mut self) {
        self.offset = std::fs::metadata(&self.path).map_or(0, |m| m.len());
    }

    /// The requests logged since the mark (a torn last line is left out).
    pub fn since_mark(&self) -> std::io::Result<Requests> {
        let mut file = std::fs::File::open(&self.path)?;
        if file.metadata()?.len() < self.offset {
            return Err(std::io::Error::other(
                "the audit log was rotated since the mark; its counts would be wrong",
            ));
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(Requests::parse(&text))
    }
}

impl Requests {
    pub fn parse(lines: &str) -> Self {
        let mut out = Self::default();
        for entry in lines
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        {
            let resource = match entry.object_ref {
                Some(ObjectRef {
                    resource: Some(r),
                    subresource: Some(s),
                }) => format!("{r}/{s}"),
                Some(ObjectRef {
                    resource: Some(r), ..
                }) => r,
                _ => "(none)".to_string(),
            };
            *out.by_user
                .entry(entry.user.username)
                .or_default()
                .entry(Request {
                    verb: entry.verb,
                    resource,
                })
                .or_default() += 1;
        }
        out
    }

    /// What `user` asked for, by verb and resource.
    pub fn of(&self, user: &str) -> BTreeMap<Request, u64> {
        self.by_user.get(user).cloned().unwrap_or_default()
    }

    /// Every user's requests added up, by verb and resource.
    pub fn all(&self) -> BTreeMap<Request, u64> {
        let mut sum = BTreeMap::new();
        for requests in self.by_user.values() {
            for (r, n) in requests {
                *sum.entry(r.clone()).or_default() += n;
            }
        }
        sum
    }
}

/// How many of `requests` change something.
pub fn writes(requests: &BTreeMap<Request, u64>) -> u64 {
    requests
        .iter()
        .filter(|(r, _)| WRITE_VERBS.contains(&r.verb.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// `requests` divided by `per` (e.g. desks), as `verb resource: n.nn` lines, largest first.
/// Requests that round to 0.00 per unit (a watch renewed once over 10,000 desks) are left
/// out, unless nothing else is there.
pub fn per_unit(requests: &BTreeMap<Request, u64>, per: usize) -> Vec<String> {
    let per = per.max(1);
    let mut rows: Vec<_> = requests
        .iter()
        .filter(|(_, n)| **n as f64 / per as f64 >= 0.005)
        .collect();
    if rows.is_empty() {
        rows = requests.iter().collect();
    }
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    rows.into_iter()
        .map(|(r, n)| format!("{} {}: {:.2}", r.verb, r.resource, *n as f64 / per as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_user_verb_and_subresource() {
        let log = r#"{"verb":"get","user":{"username":"op"},"objectRef":{"resource":"virtualmachines","name":"a"}}
{"verb":"patch","user":{"username":"op"},"objectRef":{"resource":"cyberdesks","subresource":"status"}}
{"verb":"patch","user":{"username":"op"},"objectRef":{"resource":"cyberdesks","subresource":"status"}}
{"verb":"create","user":{"username":"sim"},"objectRef":{"resource":"virtualmachineinstances"}}
{"verb":"get","user":{"username":"op"},"objectRef":{"resou"#;
        let r = Requests::parse(log);
        let op = r.of("op");
        assert_eq!(op.len(), 2);
        let status = Request {
            verb: "patch".into(),
            resource: "cyberdesks/status".into(),
        };
        assert_eq!(op[&status], 2);
        assert_eq!(writes(&op), 2);
        assert_eq!(writes(&r.all()), 3);
        assert_eq!(
            per_unit(&op, 2),
            vec!["patch cyberdesks/status: 1.00", "get virtualmachines: 0.50"]
        );
    }

    #[test]
    fn requests_that_round_to_nothing_per_unit_are_left_out_unless_alone() {
        let req = |verb: &str| Request {
            verb: verb.into(),
            resource: "cyberdesks".into(),
        };
        let mut requests = BTreeMap::from([(req("watch"), 1)]);
        assert_eq!(per_unit(&requests, 1000), vec!["watch cyberdesks: 0.00"]);
        requests.insert(req("patch"), 1000);
        assert_eq!(per_unit(&requests, 1000), vec!["patch cyberdesks: 1.00"]);
    }
}

//! Owns label-selector parsing and matching: the equality-based subset of Kubernetes selectors
//! (`k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated ANDs) that `labelSelector=` carries.

use std::collections::BTreeMap;

/// One requirement of a selector; a pod matches a selector when it meets all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector. The empty selector matches every pod, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses a `labelSelector` value. Set-based requirements (`in`, `notin`) are refused with an
    /// error rather than silently mis-parsed, so a test that needs them fails loudly.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.contains('(') {
            return Err(format!("fake-kube does not support set-based selectors: {text:?}"));
        }
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(word(key)?, word(value)?)
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(word(key)?, word(value)?)
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(word(key)?, word(value)?)
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(word(key)?)
            } else {
                Requirement::Exists(word(part)?)
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
        })
    }
}

/// A key or value: trimmed, and free of the characters that would mean we mis-split the input.
fn word(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.chars().any(|c| c.is_whitespace() || "=!,".contains(c)) {
        return Err(format!("unable to parse requirement: invalid label key or value {trimmed:?}"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn equality_inequality_and_existence_combine_as_and() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let matches = |s: &str| Selector::parse(s).unwrap().matches(&pod);
        assert!(matches(""));
        assert!(matches("app=web"));
        assert!(matches("app==web,tier"));
        assert!(matches("app!=db"));
        assert!(matches("!missing"));
        assert!(!matches("app=web,tier=back"));
        assert!(!matches("missing"));
        assert!(!matches("!app"));
        assert!(!matches("app!=web"));
    }

    #[test]
    fn set_based_and_garbage_selectors_are_errors() {
        assert!(Selector::parse("app in (a,b)").is_err());
        assert!(Selector::parse("a b=c").is_err());
        assert!(Selector::parse("a=b=c").is_err());
    }
}

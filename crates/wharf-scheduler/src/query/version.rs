//! Agent versions compared in version order (`1.9.0 < 1.14.5`), not as text.

use std::cmp::Ordering;

/// A dotted version such as `1.14.5`, ordered component by component.
///
/// Numeric components compare as numbers; a missing component counts as `0`, so
/// `1.14` equals `1.14.0`. A non-numeric component (`1.2.beta`) sorts after every
/// number and among its kind as text, which keeps the order total.
#[derive(Debug, Clone)]
pub struct AgentVersion {
    components: Vec<VersionComponent>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum VersionComponent {
    Number(u64),
    Text(String),
}

impl AgentVersion {
    /// Reads a version; `None` when it is empty or has an empty component (`1..2`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        if text.is_empty() {
            return None;
        }
        let mut components = Vec::new();
        for part in text.split('.') {
            if part.is_empty() {
                return None;
            }
            components.push(match part.parse::<u64>() {
                Ok(number) if part.bytes().all(|b| b.is_ascii_digit()) => {
                    VersionComponent::Number(number)
                }
                _ => VersionComponent::Text(part.to_owned()),
            });
        }
        Some(Self { components })
    }

    /// Like [`AgentVersion::parse`], but text that is not a version still gets a
    /// place in the order (as one text component), so an instance reporting a
    /// malformed version is compared rather than silently dropped.
    pub fn parse_lenient(text: &str) -> Self {
        Self::parse(text).unwrap_or_else(|| Self {
            components: vec![VersionComponent::Text(text.to_owned())],
        })
    }
}

impl Ord for AgentVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let zero = VersionComponent::Number(0);
        let length = self.components.len().max(other.components.len());
        for index in 0..length {
            let left = self.components.get(index).unwrap_or(&zero);
            let right = other.components.get(index).unwrap_or(&zero);
            match left.cmp(right) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for AgentVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for AgentVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for AgentVersion {}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> AgentVersion {
        AgentVersion::parse(text).expect("valid version")
    }

    #[test]
    fn orders_numerically_not_textually() {
        assert!(v("1.9.0") < v("1.14.5"));
        assert!(v("1.14.5") < v("1.14.10"));
        assert!(v("2") > v("1.99.99"));
        assert_eq!(v("1.14"), v("1.14.0"));
        assert_eq!(v("v1.2.3"), v("1.2.3"));
        assert!(v("1.2.3") < v("1.2.beta"));
    }

    #[test]
    fn rejects_empty_components() {
        assert!(AgentVersion::parse("").is_none());
        assert!(AgentVersion::parse("1..2").is_none());
        assert!(AgentVersion::parse("1.2.").is_none());
    }
}

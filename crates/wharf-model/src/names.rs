//! The naming rules ECS enforces on user-chosen names.

/// Cluster names: up to 255 letters (upper and lower case), numbers, underscores and
/// hyphens.
pub fn is_valid_cluster_name(name: &str) -> bool {
    is_word_name(name, 255)
}

/// Task definition families: up to 255 letters, numbers, underscores and hyphens.
pub fn is_valid_family(name: &str) -> bool {
    is_word_name(name, 255)
}

/// Capacity provider names: up to 255 letters, numbers, underscores and hyphens, and
/// not starting with the reserved prefixes `aws`, `ecs` or `fargate`.
pub fn is_valid_capacity_provider_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    is_word_name(name, 255)
        && !["aws", "ecs", "fargate"]
            .iter()
            .any(|prefix| lower.starts_with(prefix))
}

fn is_word_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        assert!(is_valid_cluster_name("demo-1_A"));
        assert!(!is_valid_cluster_name(""));
        assert!(!is_valid_cluster_name("has space"));
        assert!(!is_valid_cluster_name("slash/x"));
        assert!(is_valid_cluster_name(&"a".repeat(255)));
        assert!(!is_valid_cluster_name(&"a".repeat(256)));
    }

    #[test]
    fn capacity_provider_prefixes_are_reserved() {
        assert!(is_valid_capacity_provider_name("my-cp"));
        assert!(!is_valid_capacity_provider_name("FARGATE_X"));
        assert!(!is_valid_capacity_provider_name("ecs-thing"));
        assert!(!is_valid_capacity_provider_name("AWSthing"));
    }
}

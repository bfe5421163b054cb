//! Repository names and tags, validated at the edge.

use regex::Regex;
use std::sync::OnceLock;

/// Whether `name` is a repository name the registry accepts: the OCI distribution
/// grammar restricted to ECR's 2–256 characters. The grammar admits no `..`, no empty
/// path components and no leading or trailing separators, so a name can never escape a
/// key prefix or a directory.
pub fn is_valid_repository(name: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(
            r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
        )
        .expect("static regex")
    });
    (2..=256).contains(&name.len()) && re.is_match(name)
}

/// Whether `tag` matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.split_first() {
        None => false,
        Some((first, rest)) => {
            (first.is_ascii_alphanumeric() || *first == b'_')
                && rest.len() <= 127
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["team/web", "ab", "a.b_c__d--e/f0", "library/busybox"] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        for bad in [
            "a",
            "",
            "Team/web",
            "team//web",
            "/team",
            "team/",
            "team/../x",
            "a..b",
            "a___b",
            "a:b",
            "a@b",
            "-a",
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
        assert!(!is_valid_repository(&"a".repeat(257)));
    }

    #[test]
    fn tags() {
        for ok in ["1", "latest", "_x", "v1.2.3-rc_1"] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b"] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(!is_valid_tag(&"a".repeat(129)));
    }
}

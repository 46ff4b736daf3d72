//! Kubernetes name rules shared by every layer (apimachinery `pkg/util/validation`): DNS-1123
//! labels and subdomains, and fully qualified domain names.

/// DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain: DNS-1123 labels joined by dots, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// `IsFullyQualifiedDomainName`: one trailing dot allowed, then a DNS-1123 subdomain of at least
/// two labels.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    is_dns1123_subdomain(name) && name.split('.').count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_subdomains_fqdns() {
        assert!(is_dns1123_label("a-1"));
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain(&format!("{}.b", "a".repeat(253))));
        // The apiserver's FQDN test cases (kmsv2 envelope_test.go).
        for ok in [
            "a.com",
            "k8s.io",
            "10.0.0.1",
            "version.encryption.remote.io",
            "a.b.",
        ] {
            assert!(is_fqdn(ok), "{ok}");
        }
        for bad in [
            "com",
            "Dev.k8s.io",
            "*.example.com",
            "underscores_are_bad.k8s.io",
            "http://foo.example.com",
            "a..com",
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }
}

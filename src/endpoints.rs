//! The webhook's HTTP paths: one per webhook of `deploy/base/webhooks.yaml` (a wire contract). The
//! router, the tests and the benches name them from here.

pub const SECRET_GUARD: &str = "/validate/secret-guard";
pub const SECRET_NAMES: &str = "/validate/secret-names";
pub const NAMESPACE_GUARD: &str = "/validate/namespace-guard";
pub const PROJECT_GUARD: &str = "/validate/project-guard";
pub const MUTATE_SECRET: &str = "/mutate/secret";
pub const MUTATE_NAMESPACE: &str = "/mutate/namespace";

/// Every path the webhook serves.
pub const ALL: [&str; 6] = [
    SECRET_GUARD,
    SECRET_NAMES,
    NAMESPACE_GUARD,
    PROJECT_GUARD,
    MUTATE_SECRET,
    MUTATE_NAMESPACE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_webhook_has_a_path_here_and_every_path_is_registered() {
        let manifest = include_str!("../deploy/base/webhooks.yaml");
        let registered: Vec<&str> = manifest
            .lines()
            .filter_map(|line| line.trim().strip_prefix("path: "))
            .collect();
        assert!(registered.iter().all(|p| ALL.contains(p)), "{registered:?}");
        for path in ALL {
            assert!(registered.contains(&path), "{path} is not registered");
        }
    }
}

//! What changed in the config file between two readings, by setting name: a SIGHUP
//! reloads only the namespaces, and names the rest that need a restart.

/// The config file's settings as TOML, for telling what changed (never logged: only the
/// names of changed settings are).
pub fn settings_of(path: &std::path::Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse::<toml::Table>().ok()
}

/// The settings that differ between two readings of the config file, by name, other
/// than the namespaces, which a SIGHUP reloads (a changed `tls` path is a change: SIGHUP
/// re-reads the same files).
pub fn changed_settings(before: &toml::Table, now: &toml::Table) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| name.as_str() != "namespaces")
        .filter(|name| before.get(*name) != now.get(*name))
        .flat_map(|name| match (before.get(name), now.get(name)) {
            (Some(toml::Value::Table(old)), Some(toml::Value::Table(new))) => {
                changed_settings(old, new).into_iter().map(|inner| format!("{name}.{inner}")).collect()
            }
            _ => vec![name.clone()],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_settings_are_named_and_namespaces_never() {
        let before: toml::Table = "a = 1\nb = 2\n[storage]\nurl = \"x\"\n[namespaces.s]\nallow = []\n".parse().unwrap();
        let now: toml::Table =
            "a = 1\nb = 3\nc = 4\n[storage]\nurl = \"y\"\n[namespaces.t]\nallow = []\n".parse().unwrap();
        assert_eq!(changed_settings(&before, &now), ["b", "c", "storage.url"]);
        assert!(changed_settings(&before, &before).is_empty());
    }
}

//! Secrets in the configuration: given inline, by an environment variable or by a file
//! readable by its owner only.

use std::path::PathBuf;

use keyservice_client::protocol::Secret;

use super::{ConfigError, invalid};

/// A secret given at most one way: inline as `<name>`, from the environment variable
/// `<name>_env` names, or from the file `<name>_file` names (readable by its owner
/// only); with the field it came from. `None` when it is not given at all.
pub(super) fn read_secret(
    field: &str,
    name: &str,
    inline: Option<&Secret>,
    env_name: Option<&String>,
    file: Option<&PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, Secret)>, ConfigError> {
    let given: Vec<String> = [
        (inline.is_some(), name.to_owned()),
        (env_name.is_some(), format!("{name}_env")),
        (file.is_some(), format!("{name}_file")),
    ]
    .into_iter()
    .filter_map(|(set, key)| set.then_some(key))
    .collect();
    if given.len() > 1 {
        return Err(invalid(field, format!("gives the {name} more than one way ({}); keep one", given.join(", "))));
    }
    let read = match (inline, env_name, file) {
        (Some(secret), _, _) => (name.to_owned(), secret.clone()),
        (None, Some(variable), _) => {
            let value = env(variable).ok_or_else(|| {
                invalid(format!("{field}.{name}_env"), format!("environment variable {variable} is not set"))
            })?;
            (format!("{name}_env"), Secret::new(value))
        }
        (None, None, Some(path)) => {
            #[cfg(unix)]
            if let Ok(metadata) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(invalid(
                        format!("{field}.{name}_file"),
                        format!(
                            "{} has mode {mode:o}: a secret file must be readable by its owner only (chmod 600)",
                            path.display()
                        ),
                    ));
                }
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("{field}.{name}_file"), format!("cannot read {}: {e}", path.display())))?;
            (format!("{name}_file"), Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        (None, None, None) => return Ok(None),
    };
    Ok(Some(read))
}

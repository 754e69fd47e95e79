//! The `[master_key]` table: where the master key is kept.
//!
//! ```toml
//! [master_key]
//! source = "pkcs11"                            # "file" (the default) or "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"   # the token's PKCS#11 library
//! token_label = "keyservice"                   # or: slot = 0
//! key_label = "keyservice-master"
//! pin_env = "KEYSERVICE_TOKEN_PIN"             # or: pin_file = "/etc/keyservice/token.pin"
//! ```
//!
//! With `source = "file"`, the token settings may still be given: they name the token a
//! rotation moves the key to (`keyservice rotate-master-key --new-key-label`).

use std::path::PathBuf;

use serde::Deserialize;

use super::secret::read_secret;
use super::{ConfigError, invalid};
use crate::crypto::token::{TokenChoice, TokenSettings};

/// Where the master key is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterKeySource {
    /// `master_key_file`, or `KEYSERVICE_MASTER_KEY`.
    #[default]
    File,
    /// A key in a PKCS#11 token, as `[master_key]` names it.
    Pkcs11,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMasterKey {
    #[serde(default)]
    source: MasterKeySource,
    module: Option<PathBuf>,
    token_label: Option<String>,
    slot: Option<u64>,
    key_label: Option<String>,
    /// Only to refuse it with a clear message: a PIN is never written in the file.
    pin: Option<toml::Value>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
}

impl FileMasterKey {
    pub(super) fn validate(
        self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(MasterKeySource, Option<TokenSettings>), ConfigError> {
        if self.pin.is_some() {
            return Err(invalid(
                "master_key.pin",
                "a PIN is never written in the config file (it would travel with every copy of it); use pin_env or pin_file",
            ));
        }
        let any_token_setting = self.module.is_some()
            || self.token_label.is_some()
            || self.slot.is_some()
            || self.key_label.is_some()
            || self.pin_env.is_some()
            || self.pin_file.is_some();
        if !any_token_setting {
            if self.source == MasterKeySource::Pkcs11 {
                return Err(invalid("master_key.module", "is required for source = \"pkcs11\""));
            }
            return Ok((self.source, None));
        }
        let module = self.module.ok_or_else(|| invalid("master_key.module", "names the token's PKCS#11 library"))?;
        let token = match (self.token_label, self.slot) {
            (Some(label), None) => TokenChoice::Label(label),
            (None, Some(slot)) => TokenChoice::Slot(slot),
            (Some(_), Some(_)) => {
                return Err(invalid("master_key", "names the token twice (token_label and slot); keep one"));
            }
            (None, None) => return Err(invalid("master_key.token_label", "names the token (or give its slot)")),
        };
        let key_label = self.key_label.filter(|label| !label.is_empty()).ok_or_else(|| {
            invalid(
                "master_key.key_label",
                "names the master key in the token (`keyservice master-key init` creates it)",
            )
        })?;
        let (pin_from, pin) =
            read_secret("master_key", "pin", None, self.pin_env.as_ref(), self.pin_file.as_ref(), env)?
                .ok_or_else(|| invalid("master_key.pin_env", "the token's user PIN comes from pin_env or pin_file"))?;
        let settings = TokenSettings { module, token, key_label, pin, pin_from: format!("master_key.{pin_from}") };
        Ok((self.source, Some(settings)))
    }
}

//! A master key kept in a PKCS#11 token: an HSM, or SoftHSM2 where there is none.
//!
//! The key is an AES-256 key the token generated, sensitive and not extractable, so its
//! bytes never leave the token. The vault's keys are wrapped and unwrapped by the token
//! with AES-GCM (a 96-bit IV from the OS CSPRNG for each wrap, the envelope's associated
//! data as GCM's). The key's id is derived from what the token computes for a fixed
//! block (AES-ECB, as a key check value is), so every node using the same key shows the
//! same fingerprint, and no one without the key can make it.
//!
//! Token calls block (a network HSM answers in milliseconds): the vault makes them off
//! the async workers, and only at start, for a new namespace and at a rotation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyservice_client::protocol::{Secret, random_bytes};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::seal::{SealError, open_token_envelope, token_envelope};
use super::source::MasterSource;

/// Which token holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenChoice {
    /// The token with this label (`token_label`).
    Label(String),
    /// The token in this slot (`slot`).
    Slot(u64),
}

/// Where a token key is and how to log in to its token: the `[master_key]` settings
/// `module`, `token_label` or `slot`, `key_label`, and the PIN from `pin_env` or
/// `pin_file`. `Debug` never shows the PIN.
#[derive(Clone)]
pub struct TokenSettings {
    /// The PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token.
    pub token: TokenChoice,
    /// The label of the key in the token.
    pub key_label: String,
    /// The user PIN.
    pub pin: Secret,
    /// The setting the PIN came from (`master_key.pin_env` or `master_key.pin_file`),
    /// for messages.
    pub pin_from: String,
}

impl fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettings")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("key_label", &self.key_label)
            .field("pin", &format_args!("<from {}>", self.pin_from))
            .finish()
    }
}

impl TokenSettings {
    fn token_setting(&self) -> String {
        match &self.token {
            TokenChoice::Label(label) => format!("master_key.token_label ({label:?})"),
            TokenChoice::Slot(slot) => format!("master_key.slot ({slot})"),
        }
    }

    fn key_setting(&self) -> String {
        format!("master_key.key_label ({:?})", self.key_label)
    }
}

/// Why a token key could not be opened or created. Names the setting to change; never
/// contains the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The module cannot be loaded or initialised.
    #[error("master_key.module ({module}): cannot load the PKCS#11 module: {detail}")]
    Module {
        /// The module's path.
        module: String,
        /// Why.
        detail: String,
    },
    /// No token matches.
    #[error("{setting}: no such token is present in the PKCS#11 module {module}")]
    NoToken {
        /// The setting naming the token.
        setting: String,
        /// The module's path.
        module: String,
    },
    /// The PIN was refused.
    #[error("{setting}: the token refused the PIN")]
    WrongPin {
        /// Where the PIN came from.
        setting: String,
    },
    /// The token's user PIN is locked (too many wrong PINs).
    #[error("{setting}: the token's user PIN is locked; its security officer must unlock it")]
    Locked {
        /// The setting naming the token.
        setting: String,
    },
    /// No key has the label.
    #[error("{setting}: the token holds no secret key with this label; `keyservice master-key init` creates one")]
    KeyAbsent {
        /// The setting naming the key.
        setting: String,
    },
    /// Several keys have the label.
    #[error("{setting}: the token holds {count} secret keys with this label; keep one")]
    Ambiguous {
        /// The setting naming the key.
        setting: String,
        /// How many.
        count: usize,
    },
    /// The key exists but is not one a master key may be.
    #[error("{setting}: the key is unfit for a master key: {why}")]
    Unfit {
        /// The setting naming the key.
        setting: String,
        /// What is wrong with it.
        why: String,
    },
    /// `master-key init` found a key under the label already.
    #[error(
        "{setting}: the token already holds a key with this label (fingerprint {fingerprint}); it is never overwritten"
    )]
    Exists {
        /// The setting naming the key.
        setting: String,
        /// The fingerprint of the key there.
        fingerprint: String,
    },
    /// Any other refusal of the token.
    #[error("the PKCS#11 token ({setting}) failed: {detail}")]
    Failed {
        /// The setting naming the token.
        setting: String,
        /// The token's answer.
        detail: String,
    },
}

/// A master key held by a PKCS#11 token.
pub struct TokenKey {
    settings: TokenSettings,
    pkcs11: Pkcs11,
    id: [u8; 8],
    /// The open session and the key's handle; `None` after the token was lost, until a
    /// call finds it again.
    connection: Mutex<Option<Connection>>,
}

struct Connection {
    session: Session,
    key: ObjectHandle,
}

impl TokenKey {
    /// Opens the key `settings` name, checking that it is an AES-256 key that is
    /// sensitive and cannot leave the token.
    ///
    /// # Errors
    ///
    /// [`TokenError`], naming the setting to change.
    pub fn open(settings: &TokenSettings) -> Result<Self, TokenError> {
        let pkcs11 = module(&settings.module)?;
        let connection = connect(&pkcs11, settings)?;
        let id = key_id(&connection, settings)?;
        Ok(Self { settings: settings.clone(), pkcs11, id, connection: Mutex::new(Some(connection)) })
    }

    /// Generates the key `settings` name in its token (AES-256, sensitive, never
    /// extractable), refusing when a key has that label already.
    ///
    /// # Errors
    ///
    /// [`TokenError::Exists`], or why the token could not be reached.
    pub fn create(settings: &TokenSettings) -> Result<Self, TokenError> {
        let pkcs11 = module(&settings.module)?;
        let session = login(&pkcs11, settings)?;
        let label = settings.key_label.as_bytes().to_vec();
        let found = find_keys(&session, settings)?;
        if let Some(&key) = found.first() {
            let fingerprint = key_id(&Connection { session, key }, settings)
                .map(hex::encode)
                .unwrap_or_else(|_| "unreadable".to_owned());
            return Err(TokenError::Exists { setting: settings.key_setting(), fingerprint });
        }
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label),
        ];
        let key = session.generate_key(&Mechanism::AesKeyGen, &template).map_err(|e| failed(settings, &e))?;
        let connection = Connection { session, key };
        let id = key_id(&connection, settings)?;
        Ok(Self { settings: settings.clone(), pkcs11, id, connection: Mutex::new(Some(connection)) })
    }

    /// Runs `op` on the connection, finding the token again first when it was lost, and
    /// once more when `op` fails because the session or the token went away meanwhile.
    fn with_connection<T>(
        &self,
        op: impl Fn(&Connection) -> Result<T, CkError>,
        on_error: impl Fn(&CkError) -> Option<SealError>,
    ) -> Result<T, SealError> {
        let mut guard = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        let mut retried = false;
        loop {
            let connection = match guard.take() {
                Some(connection) => connection,
                None => self.reconnect()?,
            };
            match op(&connection) {
                Ok(value) => {
                    *guard = Some(connection);
                    return Ok(value);
                }
                Err(error) => {
                    if let Some(refusal) = on_error(&error) {
                        *guard = Some(connection);
                        return Err(refusal);
                    }
                    // The connection is dropped: the next try (or call) opens a new one.
                    if retried {
                        return Err(unavailable(&self.settings, &error.to_string()));
                    }
                    retried = true;
                }
            }
        }
    }

    /// A new session on the token, with the same key as at start.
    fn reconnect(&self) -> Result<Connection, SealError> {
        let connection = connect(&self.pkcs11, &self.settings).map_err(|e| SealError::Unavailable(e.to_string()))?;
        let id = key_id(&connection, &self.settings).map_err(|e| SealError::Unavailable(e.to_string()))?;
        self.same_key(id)?;
        Ok(connection)
    }

    /// Refuses a token that now answers for another key under the label than the one
    /// this server started with.
    fn same_key(&self, id: [u8; 8]) -> Result<(), SealError> {
        if id == self.id {
            return Ok(());
        }
        Err(SealError::Unavailable(format!(
            "{}: the token now holds key {} under this label, not key {} this server started with",
            self.settings.key_setting(),
            hex::encode(id),
            hex::encode(self.id)
        )))
    }
}

impl MasterSource for TokenKey {
    fn id(&self) -> [u8; 8] {
        self.id
    }

    fn wrap(&self, aad: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, SealError> {
        let iv: [u8; 12] = random_bytes()?;
        let (iv, sealed) = self.with_connection(
            |connection| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, aad, 128.into())?;
                let sealed = connection.session.encrypt(&Mechanism::AesGcm(params), connection.key, key)?;
                // A token may choose the IV itself, and writes it back.
                Ok((iv, sealed))
            },
            |_| None,
        )?;
        Ok(token_envelope(&self.id, &iv, &sealed))
    }

    fn unwrap(&self, aad: &[u8], envelope: &[u8], kind: &'static str) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let (iv, sealed) = open_token_envelope(envelope, &self.id).ok_or(SealError::Tampered(kind))?;
        let plain = self.with_connection(
            |connection| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, aad, 128.into())?;
                connection.session.decrypt(&Mechanism::AesGcm(params), connection.key, sealed).map(Zeroizing::new)
            },
            |error| {
                matches!(error, CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _))
                    .then_some(SealError::Tampered(kind))
            },
        )?;
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| SealError::Tampered(kind))?;
        Ok(Zeroizing::new(bytes))
    }

    fn check(&self) -> Result<(), SealError> {
        let id = self.with_connection(id_of, |_| None)?;
        self.same_key(id)
    }
}

/// The loaded module for `path`: one context per module and process, for as long as the
/// process runs (a second `C_Initialize` of the same library would fail, and finalising
/// it would close the sessions of every key opened from it).
fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pkcs11) = modules.get(path) {
        return Ok(pkcs11.clone());
    }
    let fail = |detail: String| TokenError::Module { module: path.display().to_string(), detail };
    if !path.is_file() {
        return Err(fail("no such file".to_owned()));
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| fail(e.to_string()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => return Err(fail(error.to_string())),
    }
    modules.insert(path.to_path_buf(), pkcs11.clone());
    Ok(pkcs11)
}

fn failed(settings: &TokenSettings, error: &CkError) -> TokenError {
    TokenError::Failed { setting: settings.token_setting(), detail: short(error) }
}

fn unavailable(settings: &TokenSettings, detail: &str) -> SealError {
    SealError::Unavailable(format!("{}: {detail}", settings.token_setting()))
}

/// The name of a PKCS#11 error (`CKR_…` in words), without the standard's paragraph.
fn short(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("{function:?} answered {rv:?}"),
        other => other.to_string(),
    }
}

fn slot(pkcs11: &Pkcs11, settings: &TokenSettings) -> Result<Slot, TokenError> {
    let slots = pkcs11.get_slots_with_token().map_err(|e| failed(settings, &e))?;
    let no_token =
        || TokenError::NoToken { setting: settings.token_setting(), module: settings.module.display().to_string() };
    match &settings.token {
        TokenChoice::Slot(id) => slots.into_iter().find(|slot| slot.id() == *id).ok_or_else(no_token),
        TokenChoice::Label(label) => slots
            .into_iter()
            .find(|&slot| pkcs11.get_token_info(slot).is_ok_and(|info| info.label().trim_end() == label))
            .ok_or_else(no_token),
    }
}

/// A logged-in session on the token.
fn login(pkcs11: &Pkcs11, settings: &TokenSettings) -> Result<Session, TokenError> {
    let slot = slot(pkcs11, settings)?;
    let info = pkcs11.get_token_info(slot).map_err(|e| failed(settings, &e))?;
    if info.user_pin_locked() {
        return Err(TokenError::Locked { setting: settings.token_setting() });
    }
    let session = pkcs11.open_rw_session(slot).map_err(|e| failed(settings, &e))?;
    let pin = AuthPin::from(settings.pin.expose().to_owned());
    match session.login(UserType::User, Some(&pin)) {
        // Login is per application and token: a second key of the same token finds it done.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(TokenError::WrongPin { setting: settings.pin_from.clone() })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(TokenError::Locked { setting: settings.token_setting() }),
        Err(error) => Err(failed(settings, &error)),
    }
}

fn find_keys(session: &Session, settings: &TokenSettings) -> Result<Vec<ObjectHandle>, TokenError> {
    let template =
        [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(settings.key_label.as_bytes().to_vec())];
    session.find_objects(&template).map_err(|e| failed(settings, &e))
}

/// A session on the token and the configured key, checked fit for a master key.
fn connect(pkcs11: &Pkcs11, settings: &TokenSettings) -> Result<Connection, TokenError> {
    let session = login(pkcs11, settings)?;
    let found = find_keys(&session, settings)?;
    let key = match found.as_slice() {
        [] => return Err(TokenError::KeyAbsent { setting: settings.key_setting() }),
        [key] => *key,
        more => return Err(TokenError::Ambiguous { setting: settings.key_setting(), count: more.len() }),
    };
    let wanted = [
        AttributeType::KeyType,
        AttributeType::ValueLen,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
    ];
    let attributes = session.get_attributes(key, &wanted).map_err(|e| failed(settings, &e))?;
    let mut problems = Vec::new();
    for attribute in &attributes {
        match attribute {
            Attribute::KeyType(kind) if *kind != KeyType::AES => problems.push("it is not an AES key"),
            Attribute::ValueLen(len) if u64::from(*len) != 32 => problems.push("it is not 256 bits long"),
            Attribute::Sensitive(false) => problems.push("it is not sensitive (CKA_SENSITIVE is false)"),
            Attribute::Extractable(true) => problems.push("it can be extracted (CKA_EXTRACTABLE is true)"),
            Attribute::Encrypt(false) | Attribute::Decrypt(false) => problems.push("it may not encrypt and decrypt"),
            _ => {}
        }
    }
    // A token leaves out what it will not tell.
    if attributes.len() < wanted.len() {
        problems.push("the token does not say whether it is sensitive and unextractable");
    }
    if !problems.is_empty() {
        return Err(TokenError::Unfit { setting: settings.key_setting(), why: problems.join("; ") });
    }
    Ok(Connection { session, key })
}

fn key_id(connection: &Connection, settings: &TokenSettings) -> Result<[u8; 8], TokenError> {
    id_of(connection).map_err(|e| failed(settings, &e))
}

/// The key's id: SHA-256 of a label and the token's AES encryption of a fixed block,
/// cut to 8 bytes (the same length as a file key's id, and as unguessable).
fn id_of(connection: &Connection) -> Result<[u8; 8], CkError> {
    let check = connection.session.encrypt(&Mechanism::AesEcb, connection.key, b"keyservice kcv\0\0")?;
    let digest = Sha256::new().chain_update(b"keyservice token key id v1\0").chain_update(&check).finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    Ok(id)
}

//! `pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH`: the root key is random and
//! kept wrapped by an AES key that never leaves an HSM.
//!
//! - `module`: the vendor's PKCS#11 library (e.g. `/usr/lib/softhsm/libsofthsm2.so`), loaded at
//!   run time.
//! - `token`: the token's label; `key-label`: the `CKA_LABEL` of exactly one AES secret key on it
//!   (create it non-extractable: `pkcs11-tool --keygen --key-type AES:32 --sensitive --private`).
//! - `pin-file`: a file (mode 0600 or stricter) holding the user PIN; the PIN is never logged.
//!
//! Fields are separated by `;`, each given once, in any order; values cannot contain `;`.
//!
//! Wrapping is `CKM_AES_GCM` inside the token with a 12-byte IV from the host RNG, a 128-bit tag
//! and non-empty associated data (the caller passes the keyring id): the stored form is
//! `iv(12) ‖ ciphertext(32) ‖ tag(16)`. The HSM is used only to wrap (at init or re-key, checked
//! by unwrapping at once) and to unwrap once at start; the hot path never reaches it. One session
//! at a time per process (a process-wide lock), closed and the library finalized after each use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{read_secret_file, trim_newline, RootKey, SealError};
use crate::crypto::{self, Key32};

/// IV length used with `CKM_AES_GCM` (the size tokens process most efficiently).
const IV_LEN: usize = 12;
/// GCM tag length.
const TAG_LEN: usize = 16;
/// Length of a wrapped root key.
pub const WRAPPED_LEN: usize = IV_LEN + 32 + TAG_LEN;

/// One PKCS#11 context at a time in this process: `C_Initialize` and `C_Finalize` are
/// process-wide for a module.
static HSM: Mutex<()> = Mutex::new(());

/// The parsed `pkcs11:` seal. Holds no secret (the PIN stays in its file until used).
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Spec {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Token label.
    pub token: String,
    /// Label of the AES key on the token.
    pub key_label: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
}

impl fmt::Display for Pkcs11Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pkcs11:module={};token={};key-label={};pin-file={}",
            self.module.display(),
            self.token,
            self.key_label,
            self.pin_file.display()
        )
    }
}

impl fmt::Debug for Pkcs11Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn field_error(field: &str, reason: impl Into<String>) -> SealError {
    SealError::BadField {
        kind: "pkcs11",
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl FromStr for Pkcs11Spec {
    type Err = SealError;
    /// Parses what follows `pkcs11:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut module, mut token, mut key_label, mut pin_file) = (None, None, None, None);
        for part in s.split(';') {
            let Some((name, value)) = part.split_once('=') else {
                return Err(field_error(
                    part,
                    "expected NAME=VALUE (module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH)",
                ));
            };
            let slot = match name {
                "module" => &mut module,
                "token" => &mut token,
                "key-label" => &mut key_label,
                "pin-file" => &mut pin_file,
                other => {
                    return Err(field_error(
                        other,
                        "unknown field; expected module, token, key-label and pin-file",
                    ))
                }
            };
            if value.is_empty() {
                return Err(field_error(name, "must not be empty"));
            }
            if slot.replace(value.to_owned()).is_some() {
                return Err(field_error(name, "given more than once"));
            }
        }
        let need = |v: Option<String>, name: &str| v.ok_or_else(|| field_error(name, "required"));
        Ok(Pkcs11Spec {
            module: need(module, "module")?.into(),
            token: need(token, "token")?,
            key_label: need(key_label, "key-label")?,
            pin_file: need(pin_file, "pin-file")?.into(),
        })
    }
}

/// The associated data binding a wrapped root key to `context` (the keyring id); never empty,
/// which SoftHSM 2.6 needs (it crashes on empty GCM associated data).
fn aad(context: &[u8]) -> Vec<u8> {
    let mut aad = b"keyward/v1 pkcs11-root\0".to_vec();
    aad.extend_from_slice(context);
    aad
}

/// Wraps `root` with the token's key, binding it to `context` (the keyring id), and checks the
/// result unwraps to the same key before returning `iv ‖ ciphertext ‖ tag`.
pub fn wrap(spec: &Pkcs11Spec, root: &RootKey, context: &[u8]) -> Result<Vec<u8>, SealError> {
    let aad = &aad(context);
    with_key(spec, |session, key| {
        let mut iv = crypto::random_array::<IV_LEN>()?;
        let mut out = iv.to_vec();
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())
            .map_err(|e| hsm_error(spec, "AES-GCM parameters", e))?;
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), key, root.key().expose())
            .map_err(|e| hsm_error(spec, "wrapping the root key (C_Encrypt, CKM_AES_GCM)", e))?;
        out.extend_from_slice(&sealed);
        if out.len() != WRAPPED_LEN {
            return Err(SealError::Pkcs11(format!(
                "the token returned {} bytes for an AES-GCM wrap, expected {}",
                out.len() - IV_LEN,
                WRAPPED_LEN - IV_LEN
            )));
        }
        let back = unwrap_in(spec, session, key, &out, aad)?;
        if back.key().expose() != root.key().expose() {
            return Err(SealError::Pkcs11(
                "the token's AES-GCM did not round-trip the root key".into(),
            ));
        }
        Ok(out)
    })
}

/// Unwraps a root key made by [`wrap`] with the same `context`.
pub fn unwrap(spec: &Pkcs11Spec, wrapped: &[u8], context: &[u8]) -> Result<RootKey, SealError> {
    let aad = &aad(context);
    if wrapped.len() != WRAPPED_LEN {
        return Err(SealError::Pkcs11(format!(
            "the stored wrapped root key has {} bytes, expected {WRAPPED_LEN}",
            wrapped.len()
        )));
    }
    with_key(spec, |session, key| {
        unwrap_in(spec, session, key, wrapped, aad)
    })
}

fn unwrap_in(
    spec: &Pkcs11Spec,
    session: &Session,
    key: ObjectHandle,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<RootKey, SealError> {
    let mut iv: [u8; IV_LEN] = wrapped[..IV_LEN]
        .try_into()
        .expect("the length was checked");
    let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())
        .map_err(|e| hsm_error(spec, "AES-GCM parameters", e))?;
    let plain = Zeroizing::new(
        session
            .decrypt(&Mechanism::AesGcm(params), key, &wrapped[IV_LEN..])
            .map_err(|e| match e {
                // SoftHSM 2.6 reports a failed tag check as CKR_GENERAL_ERROR.
                P11Error::Pkcs11(
                    RvError::GeneralError
                    | RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange,
                    _,
                ) => SealError::Pkcs11(format!(
                    "key {:?} on token {:?} does not open this keyring's wrapped root key \
                     (another key with that label, or a modified keyring)",
                    spec.key_label, spec.token
                )),
                e => hsm_error(spec, "unwrapping the root key (C_Decrypt, CKM_AES_GCM)", e),
            })?,
    );
    Key32::from_slice(&plain)
        .map(RootKey::from_key)
        .ok_or_else(|| SealError::Pkcs11("the unwrapped root key is not 32 bytes".into()))
}

fn hsm_error(spec: &Pkcs11Spec, what: &str, e: P11Error) -> SealError {
    SealError::Pkcs11(format!(
        "{what} failed on token {:?} ({}): {e}",
        spec.token,
        spec.module.display()
    ))
}

/// Reads the PIN, loads the module, logs in to the token and finds the key; runs `f`; then
/// logs out, closes the session and finalizes the library, whatever `f` returned.
fn with_key<T>(
    spec: &Pkcs11Spec,
    f: impl FnOnce(&Session, ObjectHandle) -> Result<T, SealError>,
) -> Result<T, SealError> {
    let pin = read_pin(&spec.pin_file)?;
    let _one = HSM.lock().unwrap_or_else(|e| e.into_inner());
    if !spec.module.is_file() {
        return Err(SealError::Pkcs11(format!(
            "module {}: no such file (install the vendor's PKCS#11 library, e.g. softhsm2, or fix module=)",
            spec.module.display()
        )));
    }
    let ctx = Pkcs11::new(&spec.module).map_err(|e| {
        SealError::Pkcs11(format!("cannot load module {}: {e}", spec.module.display()))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(hsm_error(spec, "C_Initialize", e)),
    }
    let res = in_session(&ctx, spec, &pin, f);
    if let Err(e) = ctx.finalize() {
        tracing::debug!(error = %e, "C_Finalize failed");
    }
    res
}

fn in_session<T>(
    ctx: &Pkcs11,
    spec: &Pkcs11Spec,
    pin: &AuthPin,
    f: impl FnOnce(&Session, ObjectHandle) -> Result<T, SealError>,
) -> Result<T, SealError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| hsm_error(spec, "listing slots", e))?;
    let mut labels = Vec::new();
    let mut found = None;
    for slot in slots {
        // A token this process cannot read (another process may be creating it) is not ours to
        // fail on: skip it, and name it if ours is not found.
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                labels.push(format!("slot {}: unreadable ({e})", slot.id()));
                continue;
            }
        };
        let label = info.label().trim_end().to_owned();
        if label == spec.token && info.token_initialized() {
            if let Some(refusal) =
                pin_refusal(info.user_pin_locked(), info.user_pin_final_try(), spec)
            {
                return Err(SealError::Pkcs11(refusal));
            }
            if info.user_pin_count_low() {
                tracing::warn!(token = %spec.token, "the token counted wrong PINs since the last login; a few more lock it");
            }
            found = Some(slot);
            break;
        }
        // An uninitialized token (SoftHSM's free slot) has no label to offer.
        labels.push(match info.token_initialized() {
            true => format!("{label:?}"),
            false => format!("slot {}: not initialized", slot.id()),
        });
    }
    let slot = found.ok_or_else(|| {
        SealError::Pkcs11(format!(
            "no initialized token labelled {:?} in {} (tokens: {})",
            spec.token,
            spec.module.display(),
            if labels.is_empty() {
                "none".to_owned()
            } else {
                labels.join(", ")
            }
        ))
    })?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(|e| hsm_error(spec, "opening a session", e))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(SealError::Pkcs11(format!(
                "wrong PIN for token {:?} (from {})",
                spec.token,
                spec.pin_file.display()
            )))
        }
        Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
            return Err(SealError::Pkcs11(format!(
                "the PIN of token {:?} is locked after too many wrong attempts",
                spec.token
            )))
        }
        Err(e) => return Err(hsm_error(spec, "logging in", e)),
    }
    let res = find_key(&session, spec).and_then(|key| f(&session, key));
    let _ = session.logout();
    res
}

/// Why not to log in to a token whose user PIN is locked, or one wrong PIN away from it (a
/// service restarted again and again with a wrong PIN file would lock it; SoftHSM never
/// does, an HSM does).
fn pin_refusal(locked: bool, final_try: bool, spec: &Pkcs11Spec) -> Option<String> {
    if locked {
        return Some(format!(
            "the PIN of token {:?} is locked after too many wrong attempts; its security officer must unlock it",
            spec.token
        ));
    }
    final_try.then(|| {
        format!(
            "one more wrong PIN locks token {:?}: keyward does not try; check {}, then log in once by hand (pkcs11-tool --login) to reset the count",
            spec.token,
            spec.pin_file.display()
        )
    })
}

fn find_key(session: &Session, spec: &Pkcs11Spec) -> Result<ObjectHandle, SealError> {
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(spec.key_label.as_bytes().to_vec()),
        ])
        .map_err(|e| hsm_error(spec, "finding the key", e))?;
    let key = match keys.as_slice() {
        [key] => *key,
        [] => {
            return Err(SealError::Pkcs11(format!(
                "no AES key labelled {:?} on token {:?}; create one with pkcs11-tool --keygen \
                 --key-type AES:32 --label {} --sensitive --private",
                spec.key_label, spec.token, spec.key_label
            )))
        }
        more => {
            return Err(SealError::Pkcs11(format!(
                "{} AES keys are labelled {:?} on token {:?}; the label must name exactly one",
                more.len(),
                spec.key_label,
                spec.token
            )))
        }
    };
    let wanted = [
        AttributeType::Extractable,
        AttributeType::Sensitive,
        AttributeType::Private,
        AttributeType::ValueLen,
    ];
    if let Ok(attrs) = session.get_attributes(key, &wanted) {
        let weaknesses = key_weaknesses(&attrs);
        if !weaknesses.is_empty() {
            tracing::warn!(
                token = %spec.token,
                key_label = %spec.key_label,
                "the HSM key is {}; create it with pkcs11-tool --keygen --key-type AES:32 --sensitive --private (and without --extractable)",
                weaknesses.join(", ")
            );
        }
    }
    Ok(key)
}

/// What makes a wrapping key with `attrs` weaker than the token can keep it: readable out of
/// the token, usable (and, on SoftHSM, stored unencrypted) without login, or shorter than
/// 256 bits.
fn key_weaknesses(attrs: &[Attribute]) -> Vec<&'static str> {
    attrs
        .iter()
        .filter_map(|a| match a {
            Attribute::Extractable(true) => Some("extractable"),
            Attribute::Sensitive(false) => Some("not sensitive (its value can be read)"),
            Attribute::Private(false) => {
                Some("not private (usable without login; SoftHSM stores it unencrypted)")
            }
            Attribute::ValueLen(len) if usize::from(*len) < 32 => Some("shorter than 256 bits"),
            _ => None,
        })
        .collect()
}

fn read_pin(path: &Path) -> Result<AuthPin, SealError> {
    let data = read_secret_file(path)?;
    let pin = trim_newline(&data);
    if pin.is_empty() {
        return Err(SealError::BadContent {
            path: path.to_owned(),
            reason: "the PIN file is empty",
        });
    }
    let pin = std::str::from_utf8(pin).map_err(|_| SealError::BadContent {
        path: path.to_owned(),
        reason: "the PIN file is not UTF-8 text",
    })?;
    Ok(AuthPin::from(pin.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_pin_or_its_last_try_is_not_used() {
        let spec: Pkcs11Spec = "module=/m.so;token=t;key-label=k;pin-file=/p"
            .parse()
            .unwrap();
        assert_eq!(pin_refusal(false, false, &spec), None);
        assert!(pin_refusal(true, false, &spec)
            .unwrap()
            .contains("is locked after too many wrong attempts"));
        let last = pin_refusal(false, true, &spec).unwrap();
        assert!(
            last.starts_with(
                "one more wrong PIN locks token \"t\": keyward does not try; check /p"
            ),
            "{last}"
        );
    }

    #[test]
    fn parsing_is_strict_and_names_the_field() {
        let s: Pkcs11Spec = "module=/m.so;token=t;key-label=k;pin-file=/p"
            .parse()
            .unwrap();
        assert_eq!(s.module, PathBuf::from("/m.so"));
        assert_eq!((s.token.as_str(), s.key_label.as_str()), ("t", "k"));
        assert_eq!(
            s.to_string(),
            "pkcs11:module=/m.so;token=t;key-label=k;pin-file=/p"
        );
        // Any order.
        let t: Pkcs11Spec = "pin-file=/p;key-label=k;token=t;module=/m.so"
            .parse()
            .unwrap();
        assert_eq!(s, t);
        for (bad, field) in [
            ("module=/m.so;token=t;key-label=k", "pin-file: required"),
            (
                "module=/m.so;token=t;key-label=k;pin-file=",
                "pin-file: must not be empty",
            ),
            (
                "module=/m;module=/n;token=t;key-label=k;pin-file=/p",
                "module: given more than once",
            ),
            (
                "module=/m;token=t;label=k;pin-file=/p",
                "label: unknown field",
            ),
            (
                "module=/m;token;key-label=k;pin-file=/p",
                "token: expected NAME=VALUE",
            ),
            ("x", "x: expected NAME=VALUE"),
        ] {
            let e = bad.parse::<Pkcs11Spec>().unwrap_err().to_string();
            assert!(
                e.starts_with("invalid seal pkcs11: ") && e.contains(field),
                "{bad}: {e}"
            );
        }
    }
}

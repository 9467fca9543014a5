//! First-boot credentials: outside production, an unset admin token or secrets key is generated
//! once into the data dir (mode 0600) and reused on later boots. Production refuses to start
//! without both. Nothing here prints a credential except the one-time admin token notice.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    auth::MintedToken,
    config::{Config, Environment, Secret},
    crypto::SecretsKey,
};

/// Credentials resolved for this boot.
pub struct Credentials {
    pub admin_token: Option<Secret>,
    pub keys: SecretsKeys,
    /// Set when the admin token was generated on this boot, so it can be shown once.
    pub generated_admin_token: Option<PathBuf>,
}

/// The key that seals every write and, during a rotation, the one rows may still be under.
pub struct SecretsKeys {
    pub current: SecretsKey,
    pub previous: Option<SecretsKey>,
}

/// The shortest admin token production accepts.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Everything about the configured credentials and mode that can be judged before anything is
/// touched: an unknown `MOLECULE_ENV`, production without (or with a short) `ADMIN_TOKEN` or
/// without `SECRETS_ENCRYPTION_KEY`, a key that does not parse. Each refusal is one line.
pub fn validate(config: &Config) -> Result<(), String> {
    let production = Environment::parse(&config.environment)? == Environment::Production;
    if production {
        match config
            .admin_token
            .as_ref()
            .map(|token| token.expose().chars().count())
        {
            None | Some(0) => {
                return Err("refusing to start in production without ADMIN_TOKEN".to_owned());
            }
            Some(length) if length < MIN_ADMIN_TOKEN_CHARS => {
                return Err(format!(
                    "refusing to start in production: ADMIN_TOKEN has {length} characters, at least {MIN_ADMIN_TOKEN_CHARS} are required"
                ));
            }
            Some(_) => {}
        }
        if config.secrets_encryption_key.is_none() {
            return Err(
                "refusing to start in production without SECRETS_ENCRYPTION_KEY".to_owned(),
            );
        }
    }
    parse_configured_keys(config).map(drop)
}

pub fn resolve(config: &Config) -> Result<Credentials, String> {
    validate(config)?;
    let production = config.environment() == Environment::Production;
    let keys = resolve_keys(config)?;
    if production {
        return Ok(Credentials {
            admin_token: config.admin_token.clone(),
            keys,
            generated_admin_token: None,
        });
    }
    let data_dir = &config.storage.data_dir;
    let (admin_token, generated_admin_token) = match &config.admin_token {
        Some(token) if !token.expose().is_empty() => (Some(token.clone()), None),
        _ => {
            let path = data_dir.join("admin-token");
            let (token, created) = read_or_create(&path, || MintedToken::generate().plaintext)?;
            (Some(Secret::new(token)), created.then_some(path))
        }
    };
    Ok(Credentials {
        admin_token,
        keys,
        generated_admin_token,
    })
}

/// The secrets keys: `SECRETS_ENCRYPTION_KEY` (+ `_PREVIOUS`), or outside production the
/// generated `<data dir>/secrets.key` (+ `secrets.key.previous`, left there by an operator who
/// is rotating).
pub fn resolve_keys(config: &Config) -> Result<SecretsKeys, String> {
    let (configured, mut previous) = parse_configured_keys(config)?;
    if let Some(current) = configured {
        return Ok(SecretsKeys { current, previous });
    }
    if config.environment() == Environment::Production {
        return Err("refusing to start in production without SECRETS_ENCRYPTION_KEY".to_owned());
    }
    let data_dir = &config.storage.data_dir;
    crate::store::ensure_data_dir(data_dir)
        .map_err(|err| format!("cannot create data dir {}: {err}", data_dir.display()))?;
    let path = data_dir.join("secrets.key");
    let (text, _) = read_or_create(&path, || SecretsKey::generate().to_base64())?;
    let current = key_file(&path, &text)?;
    let previous_path = data_dir.join("secrets.key.previous");
    if previous.is_none() {
        previous = match fs::read_to_string(&previous_path) {
            Ok(text) => Some(key_file(&previous_path, text.trim())?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(format!("cannot read {}: {err}", previous_path.display())),
        };
    }
    Ok(SecretsKeys { current, previous })
}

/// `SECRETS_ENCRYPTION_KEY` and `_PREVIOUS`, parsed when set.
fn parse_configured_keys(
    config: &Config,
) -> Result<(Option<SecretsKey>, Option<SecretsKey>), String> {
    let parse = |name: &str, value: &Option<Secret>| match value {
        Some(raw) => {
            SecretsKey::parse(raw.expose()).map_err(|reason| format!("{name} is invalid: {reason}"))
        }
        None => Ok(None),
    };
    Ok((
        parse("SECRETS_ENCRYPTION_KEY", &config.secrets_encryption_key)?,
        parse(
            "SECRETS_ENCRYPTION_KEY_PREVIOUS",
            &config.secrets_encryption_key_previous,
        )?,
    ))
}

fn key_file(path: &Path, text: &str) -> Result<SecretsKey, String> {
    SecretsKey::parse(text)
        .ok()
        .flatten()
        .ok_or_else(|| format!("{} does not hold a valid key", path.display()))
}

/// Reads a credential file, or creates it with owner-only permissions. Returns whether it was
/// created now.
fn read_or_create(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> Result<(String, bool), String> {
    match fs::read_to_string(path) {
        Ok(text) => return Ok((text.trim().to_owned(), false)),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot read {}: {err}", path.display()));
        }
        Err(_) => {}
    }
    let value = generate();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    Ok((value, true))
}

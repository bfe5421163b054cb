//! The root access key and the AWS CLI files written next to the state.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The root key pair, kept in `<data-dir>/root-key.json` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

const ROOT_KEY_FILE: &str = "root-key.json";
const ENDPOINT_FILE: &str = "endpoint";
const CREDENTIALS_FILE: &str = "aws-credentials";
const CONFIG_FILE: &str = "aws-config";

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    // Written to a temporary name and renamed, so a crash never leaves half a file.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn generate() -> RootKey {
    let mut rng = rand::thread_rng();
    let id: String = (0..16)
        .map(|_| {
            let c = rng.sample(Alphanumeric) as char;
            c.to_ascii_uppercase()
        })
        .collect();
    // Alphanumeric secrets contain no ':' and survive every shell and config parser.
    let secret: String = (0..40).map(|_| rng.sample(Alphanumeric) as char).collect();
    RootKey {
        access_key_id: format!("AKIA{id}"),
        secret_access_key: secret,
    }
}

/// Loads the root key, or creates it on first start. A key given on the command line
/// wins and is remembered. Returns the key and whether it was newly generated.
pub(crate) fn root_key(data_dir: &Path, given: Option<&str>) -> anyhow::Result<(RootKey, bool)> {
    let path = data_dir.join(ROOT_KEY_FILE);
    if let Some(given) = given {
        let (id, secret) = given
            .split_once(':')
            .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--root-access-key must be ID:SECRET"))?;
        let key = RootKey {
            access_key_id: id.to_owned(),
            secret_access_key: secret.to_owned(),
        };
        write_private(&path, &serde_json::to_string(&key)?)?;
        return Ok((key, false));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
            false,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate();
            write_private(&path, &serde_json::to_string(&key)?)?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the shared-credentials and config files the AWS CLI and SDKs read, and the
/// endpoint `wharf env` prints.
pub(crate) fn write_client_files(
    data_dir: &Path,
    key: &RootKey,
    region: &str,
    endpoint: &str,
) -> anyhow::Result<()> {
    write_private(
        &data_dir.join(CREDENTIALS_FILE),
        &format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key.access_key_id, key.secret_access_key
        ),
    )?;
    write_private(
        &data_dir.join(CONFIG_FILE),
        &format!("[default]\nregion = {region}\noutput = json\n"),
    )?;
    write_private(&data_dir.join(ENDPOINT_FILE), endpoint)?;
    Ok(())
}

/// The `export` lines of `wharf env`.
pub(crate) fn env_lines(data_dir: &Path) -> anyhow::Result<String> {
    let endpoint = std::fs::read_to_string(data_dir.join(ENDPOINT_FILE)).with_context(|| {
        format!(
            "no Wharf has run with data directory {} (start one with `wharf up`)",
            data_dir.display()
        )
    })?;
    let dir = std::fs::canonicalize(data_dir)?;
    Ok(format!(
        "export AWS_ENDPOINT_URL={}\nexport AWS_SHARED_CREDENTIALS_FILE={}\nexport AWS_CONFIG_FILE={}\n",
        endpoint.trim(),
        dir.join(CREDENTIALS_FILE).display(),
        dir.join(CONFIG_FILE).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_key_is_kept_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let (first, fresh) = root_key(dir.path(), None).unwrap();
        assert!(fresh);
        assert!(first.access_key_id.starts_with("AKIA"));
        assert!(!first.secret_access_key.contains(':'));
        let (again, fresh) = root_key(dir.path(), None).unwrap();
        assert!(!fresh);
        assert_eq!(again.secret_access_key, first.secret_access_key);
        write_client_files(dir.path(), &first, "eu-west-1", "http://127.0.0.1:1").unwrap();
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let env = env_lines(dir.path()).unwrap();
        assert!(env.contains("AWS_ENDPOINT_URL=http://127.0.0.1:1\n"));
        let config = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
        assert!(config.contains("region = eu-west-1"));
    }

    #[test]
    fn given_key_wins_and_must_have_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = root_key(dir.path(), Some("test:secret")).unwrap();
        assert_eq!(key.access_key_id, "test");
        assert!(root_key(dir.path(), Some("nocolon")).is_err());
        assert!(root_key(dir.path(), Some(":x")).is_err());
        let (kept, _) = root_key(dir.path(), None).unwrap();
        assert_eq!(kept.access_key_id, "test");
    }
}

//! Secret answers at rest: sealed with the keyring for one job, so that a sealed value copied
//! to another job's row does not open, and opened only to hand them to that job's agent.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::Answers;
use crate::keyring::{Keyring, KeyringError, Sealed};
use crate::model::JobUuid;
use crate::store::jobs::SealedVars;

/// What binds a job's sealed answers to it.
pub fn context(job: JobUuid) -> Vec<u8> {
    format!("outpost job secret vars v1/{job}").into_bytes()
}

/// Seals `answers`' secrets for `job`; `None` when there are none.
pub fn seal(
    keyring: &Keyring,
    job: JobUuid,
    answers: &Answers,
) -> Result<Option<SealedVars>, KeyringError> {
    if answers.secrets.is_empty() {
        return Ok(None);
    }
    let sealed = keyring.seal(&answers.secrets_json(), &context(job))?;
    Ok(Some(SealedVars {
        names: answers.secrets.iter().map(|(k, _)| k.clone()).collect(),
        key_id: sealed.key_id,
        sealed: sealed.bytes,
    }))
}

/// Opens a job's secret answers: (name, value) pairs, wiped when dropped.
pub fn open(
    keyring: &Keyring,
    job: JobUuid,
    sealed: &SealedVars,
) -> Result<Vec<(String, Zeroizing<String>)>, KeyringError> {
    let plain = keyring.open(
        &Sealed {
            key_id: sealed.key_id.clone(),
            bytes: sealed.sealed.clone(),
        },
        &context(job),
    )?;
    let map: Map<String, Value> =
        serde_json::from_slice(&plain).map_err(|_| KeyringError::Malformed("not secret vars"))?;
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            Value::String(s) => out.push((k, Zeroizing::new(s))),
            _ => return Err(KeyringError::Malformed("a secret var is not text")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_answers_open_only_for_their_job() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::load_or_create(dir.path()).unwrap();
        let answers = Answers {
            vars: Map::new(),
            secrets: vec![("token".into(), Zeroizing::new("s3cr3t".into()))],
        };
        let job = JobUuid::new_v4();
        let sealed = seal(&keyring, job, &answers).unwrap().unwrap();
        assert_eq!(sealed.names, ["token"]);
        assert!(!sealed.sealed.windows(6).any(|w| w == b"s3cr3t"));
        let opened = open(&keyring, job, &sealed).unwrap();
        assert_eq!(
            (opened[0].0.as_str(), opened[0].1.as_str()),
            ("token", "s3cr3t")
        );
        assert!(open(&keyring, JobUuid::new_v4(), &sealed).is_err());
        assert!(seal(&keyring, job, &Answers::default()).unwrap().is_none());
    }
}

//! Write keys as configured: a plain string, or `{id, key}` to give the key a name scripts and
//! logs can show (`meta.write_key_id`) without ever showing the key.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};

/// One entry of `sources[].write_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteKey {
    /// Not secret: stored with every event, shown to scripts as `meta.write_key_id`.
    pub id: String,
    /// The secret clients send.
    pub key: String,
}

impl WriteKey {
    /// A key written as a plain string: its id is a fingerprint, `sha256:` and the first 12 hex
    /// digits of the key's SHA-256, enough to tell keys apart and useless for guessing the key.
    pub fn plain(key: impl Into<String>) -> Self {
        let key = key.into();
        WriteKey { id: fingerprint(&key), key }
    }

    pub fn named(id: impl Into<String>, key: impl Into<String>) -> Self {
        WriteKey { id: id.into(), key: key.into() }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.key.trim().is_empty() {
            return Err("a write key is empty".into());
        }
        if self.id.is_empty()
            || self.id.len() > 64
            || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(format!("write key id {:?} must be 1-64 of [A-Za-z0-9_.:-]", self.id));
        }
        Ok(())
    }
}

pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

impl From<&str> for WriteKey {
    fn from(key: &str) -> Self {
        WriteKey::plain(key)
    }
}

impl PartialEq<&str> for WriteKey {
    fn eq(&self, key: &&str) -> bool {
        self.key == *key
    }
}

impl<'de> Deserialize<'de> for WriteKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WriteKeyVisitor)
    }
}

struct WriteKeyVisitor;

impl<'de> Visitor<'de> for WriteKeyVisitor {
    type Value = WriteKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a write key string, or {id: NAME, key: SECRET}")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<WriteKey, E> {
        Ok(WriteKey::plain(key))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<WriteKey, M::Error> {
        let (mut id, mut key) = (None::<String>, None::<String>);
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "id" => id = Some(map.next_value()?),
                "key" => key = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["id", "key"])),
            }
        }
        match (id, key) {
            (Some(id), Some(key)) => Ok(WriteKey::named(id, key)),
            (None, _) => Err(de::Error::missing_field("id")),
            (_, None) => Err(de::Error::missing_field("key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_get_a_fingerprint_and_named_keys_their_name() {
        let keys: Vec<WriteKey> = serde_json::from_str(r#"["secret-1", {"id": "ios-app", "key": "secret-2"}]"#).unwrap();
        // As `printf secret-1 | sha256sum` prints it.
        assert_eq!(keys[0].id, "sha256:f7e7c36e458e");
        assert!(!keys[0].id.contains("secret"));
        assert_eq!(keys[1], WriteKey::named("ios-app", "secret-2"));
        let err = serde_json::from_str::<WriteKey>(r#"{"id": "x", "secret": "y"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `secret`"), "{err}");
        assert!(serde_json::from_str::<WriteKey>(r#"{"key": "y"}"#).unwrap_err().to_string().contains("missing field `id`"));
        assert!(WriteKey::named("has space", "k").validate().is_err());
    }
}

//! Segment-spec messages and their builders.
//!
//! Every message gets its `messageId` (UUID v4), `originalTimestamp` (now, RFC 3339 with
//! milliseconds) and `context.library` when it is built, so the id can be logged or stored by the
//! caller before the message is sent, and a retry never changes it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// The SDK's name in `context.library.name`.
pub const LIBRARY_NAME: &str = "sluice-analytics";
/// The SDK's version in `context.library.version`.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who a message is about: a known user, an anonymous visitor, or both (e.g. right after login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    User(String),
    Anonymous(String),
    Both { user_id: String, anonymous_id: String },
}

impl Identity {
    pub fn user(user_id: impl Into<String>) -> Identity {
        Identity::User(user_id.into())
    }
    pub fn anonymous(anonymous_id: impl Into<String>) -> Identity {
        Identity::Anonymous(anonymous_id.into())
    }
    pub fn both(user_id: impl Into<String>, anonymous_id: impl Into<String>) -> Identity {
        Identity::Both {
            user_id: user_id.into(),
            anonymous_id: anonymous_id.into(),
        }
    }

    fn write(&self, m: &mut Map<String, Value>) {
        match self {
            Identity::User(u) => {
                m.insert("userId".into(), u.as_str().into());
            }
            Identity::Anonymous(a) => {
                m.insert("anonymousId".into(), a.as_str().into());
            }
            Identity::Both {
                user_id,
                anonymous_id,
            } => {
                m.insert("userId".into(), user_id.as_str().into());
                m.insert("anonymousId".into(), anonymous_id.as_str().into());
            }
        }
    }
}

/// The Segment message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Track => "track",
            MessageType::Identify => "identify",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }
}

/// One Segment-spec message, built with [`Message::track`] and friends and refined with the
/// builder methods. Fields set by the builder win over the same keys passed through
/// [`Message::set`].
#[derive(Debug, Clone)]
pub struct Message {
    kind: MessageType,
    message_id: String,
    fields: Map<String, Value>,
    context: Map<String, Value>,
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Message {
    fn new(kind: MessageType) -> Message {
        let mut fields = Map::new();
        fields.insert("type".into(), kind.as_str().into());
        fields.insert("originalTimestamp".into(), now_rfc3339().into());
        let mut context = Map::new();
        context.insert(
            "library".into(),
            serde_json::json!({"name": LIBRARY_NAME, "version": LIBRARY_VERSION}),
        );
        Message {
            kind,
            message_id: uuid::Uuid::new_v4().to_string(),
            fields,
            context,
        }
    }

    fn with_identity(kind: MessageType, identity: Identity) -> Message {
        let mut m = Message::new(kind);
        identity.write(&mut m.fields);
        m
    }

    /// `track`: something `identity` did, named `event` ("Post Created").
    pub fn track(identity: Identity, event: impl Into<String>) -> Message {
        let mut m = Message::with_identity(MessageType::Track, identity);
        m.fields.insert("event".into(), Value::String(event.into()));
        m
    }

    /// `identify`: who the user is; add `.traits(...)`.
    pub fn identify(identity: Identity) -> Message {
        Message::with_identity(MessageType::Identify, identity)
    }

    /// `page`: a web page view named `name`.
    pub fn page(identity: Identity, name: impl Into<String>) -> Message {
        let mut m = Message::with_identity(MessageType::Page, identity);
        m.fields.insert("name".into(), Value::String(name.into()));
        m
    }

    /// `screen`: a mobile/desktop screen view named `name`.
    pub fn screen(identity: Identity, name: impl Into<String>) -> Message {
        let mut m = Message::with_identity(MessageType::Screen, identity);
        m.fields.insert("name".into(), Value::String(name.into()));
        m
    }

    /// `group`: ties `identity` to the group (team, workspace) `group_id`.
    pub fn group(identity: Identity, group_id: impl Into<String>) -> Message {
        let mut m = Message::with_identity(MessageType::Group, identity);
        m.fields
            .insert("groupId".into(), Value::String(group_id.into()));
        m
    }

    /// `alias`: `user_id` is the same person as `previous_id` (e.g. the anonymous id before signup).
    pub fn alias(user_id: impl Into<String>, previous_id: impl Into<String>) -> Message {
        let mut m = Message::with_identity(MessageType::Alias, Identity::user(user_id));
        m.fields
            .insert("previousId".into(), Value::String(previous_id.into()));
        m
    }

    /// The message's `messageId` (UUID v4, fixed when the message was built).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The message's type.
    pub fn kind(&self) -> MessageType {
        self.kind
    }

    /// Replaces the generated `messageId` (e.g. with an id the caller already stored, so a resend
    /// after the caller's own crash is recognisable as a duplicate downstream).
    pub fn with_message_id(mut self, id: impl Into<String>) -> Message {
        self.message_id = id.into();
        self
    }

    /// `properties` (track, page, screen). Replaces earlier properties.
    pub fn properties(mut self, properties: Value) -> Message {
        self.fields.insert("properties".into(), properties);
        self
    }

    /// `traits` (identify, group). Replaces earlier traits.
    pub fn traits(mut self, traits: Value) -> Message {
        self.fields.insert("traits".into(), traits);
        self
    }

    /// Merged key by key into `context` (`context.library` stays the SDK's unless set here).
    /// A non-object value is ignored.
    pub fn context(mut self, context: Value) -> Message {
        if let Value::Object(extra) = context {
            for (k, v) in extra {
                self.context.insert(k, v);
            }
        }
        self
    }

    /// `integrations` (per-destination switches, passed through).
    pub fn integrations(mut self, integrations: Value) -> Message {
        self.fields.insert("integrations".into(), integrations);
        self
    }

    /// `timestamp`: when the action happened, if not now (e.g. an imported event).
    pub fn timestamp(mut self, at: DateTime<Utc>) -> Message {
        self.fields.insert(
            "timestamp".into(),
            at.to_rfc3339_opts(SecondsFormat::Millis, true).into(),
        );
        self
    }

    /// Any other top-level field. `type`, `messageId` and `context` cannot be set this way.
    pub fn set(mut self, key: impl Into<String>, value: Value) -> Message {
        let key = key.into();
        if !matches!(key.as_str(), "type" | "messageId" | "context") {
            self.fields.insert(key, value);
        }
        self
    }

    /// Checks what the collector would refuse for sure, so a bad message fails at `send()`.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let blank = |k: &str| {
            self.fields
                .get(k)
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
        };
        if blank("userId") && blank("anonymousId") {
            return Err("userId or anonymousId must be non-blank".into());
        }
        if self.message_id.trim().is_empty() {
            return Err("messageId must be non-blank".into());
        }
        match self.kind {
            MessageType::Track if blank("event") => Err("track needs a non-blank event".into()),
            MessageType::Group if blank("groupId") => Err("group needs a non-blank groupId".into()),
            MessageType::Alias if blank("previousId") => {
                Err("alias needs a non-blank previousId".into())
            }
            _ => Ok(()),
        }
    }

    /// The JSON the SDK queues and sends (without `sentAt`, which the batch envelope carries).
    pub fn to_json(&self) -> Value {
        let mut m = self.fields.clone();
        m.insert("messageId".into(), self.message_id.clone().into());
        m.insert("context".into(), Value::Object(self.context.clone()));
        Value::Object(m)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("a JSON value always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn track_has_ids_timestamp_library_and_merged_context() {
        let m = Message::track(Identity::user("u42"), "Post Created")
            .properties(json!({"channel_id": "c1"}))
            .context(json!({"client": "web"}));
        let v = m.to_json();
        assert_eq!(v["type"], "track");
        assert_eq!(v["userId"], "u42");
        assert_eq!(v["event"], "Post Created");
        assert_eq!(v["messageId"], m.message_id());
        assert_eq!(uuid::Uuid::parse_str(m.message_id()).unwrap().get_version_num(), 4);
        assert!(DateTime::parse_from_rfc3339(v["originalTimestamp"].as_str().unwrap()).is_ok());
        assert_eq!(v["context"]["library"]["name"], LIBRARY_NAME);
        assert_eq!(v["context"]["library"]["version"], LIBRARY_VERSION);
        assert_eq!(v["context"]["client"], "web");
        assert!(m.validate().is_ok());
    }

    #[test]
    fn each_type_carries_its_field_and_validation_catches_blanks() {
        assert_eq!(Message::alias("u1", "a1").to_json()["previousId"], "a1");
        assert_eq!(Message::group(Identity::anonymous("a"), "t1").to_json()["groupId"], "t1");
        assert_eq!(Message::screen(Identity::both("u", "a"), "S").to_json()["anonymousId"], "a");
        assert_eq!(Message::page(Identity::user("u"), "Home").to_json()["name"], "Home");
        assert!(Message::track(Identity::user(" "), "E").validate().is_err());
        assert!(Message::track(Identity::user("u"), "").validate().is_err());
        assert!(Message::alias("u", "").validate().is_err());
        let ids: std::collections::HashSet<String> = (0..100)
            .map(|_| Message::identify(Identity::user("u")).message_id().to_string())
            .collect();
        assert_eq!(ids.len(), 100);
    }
}

//! The few fields the router needs from an event (type and name for filters, `integrations` for
//! routing, user for lanes, messageId for the transformation's `meta`, receivedAt for lag), read
//! without building a tree.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub(crate) struct RouteHead<'a> {
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "userId")]
    pub user_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "anonymousId")]
    pub anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "messageId")]
    pub message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "receivedAt")]
    pub received_at: Option<Cow<'a, str>>,
    /// Kept unparsed: only a destination deciding whether to take the event looks inside.
    #[serde(borrow, default)]
    pub integrations: Option<&'a RawValue>,
}

impl<'a> RouteHead<'a> {
    pub fn parse(event: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(event)
    }

    /// Lane of the event: the same user always maps to the same lane, which keeps each user's
    /// events in order while lanes run in parallel.
    pub fn lane(&self, lanes: usize) -> usize {
        let user = self.user_id.or(self.anonymous_id).map(RawValue::get).unwrap_or("");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        (h.finish() % lanes as u64) as usize
    }
}

//! The chat core's own data: an embedded SQLite database in WAL mode (`<data_dir>/chat.db`),
//! created on first start.
//!
//! One connection behind a mutex serves every request: SQLite allows one writer at a time anyway,
//! and the hot reads (who is in a channel, who holds a token) are cached in memory by the callers.
//! `synchronous = NORMAL` in WAL mode keeps committed transactions across a crash of the process
//! (only a power cut can lose the last ones), which is what a restart test exercises.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ChatError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, email TEXT NOT NULL UNIQUE,
  first_name TEXT NOT NULL, last_name TEXT NOT NULL, password_hash TEXT NOT NULL, create_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  token TEXT PRIMARY KEY, user_id TEXT NOT NULL, create_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS teams (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, display_name TEXT NOT NULL, create_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS team_members (
  team_id TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (team_id, user_id));
CREATE TABLE IF NOT EXISTS channels (
  id TEXT PRIMARY KEY, team_id TEXT NOT NULL, name TEXT NOT NULL, display_name TEXT NOT NULL,
  type TEXT NOT NULL, create_at INTEGER NOT NULL, UNIQUE (team_id, name));
CREATE TABLE IF NOT EXISTS channel_members (
  channel_id TEXT NOT NULL, user_id TEXT NOT NULL, last_viewed_at INTEGER NOT NULL,
  PRIMARY KEY (channel_id, user_id));
CREATE INDEX IF NOT EXISTS channel_members_user ON channel_members (user_id);
CREATE TABLE IF NOT EXISTS posts (
  id TEXT PRIMARY KEY, channel_id TEXT NOT NULL, user_id TEXT NOT NULL, root_id TEXT NOT NULL,
  message TEXT NOT NULL, create_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS posts_channel ON posts (channel_id, create_at);
CREATE TABLE IF NOT EXISTS reactions (
  user_id TEXT NOT NULL, post_id TEXT NOT NULL, emoji_name TEXT NOT NULL, create_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, post_id, emoji_name));
";

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub create_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub create_at: i64,
}

/// Mattermost's one-letter channel types: `O` public, `P` private, `D` direct.
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub create_at: i64,
}

impl Channel {
    /// The type as analytics properties spell it.
    pub fn type_name(&self) -> &'static str {
        match self.kind.as_str() {
            "O" => "public",
            "P" => "private",
            _ => "direct",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Post {
    pub id: String,
    pub channel_id: String,
    pub user_id: String,
    pub root_id: String,
    pub message: String,
    pub create_at: i64,
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn hash_password(user_id: &str, password: &str) -> String {
    // Salted with the user id; a production server would use a slow KDF (argon2), which would
    // make the load generator's thousands of logins measure the KDF instead of the chat.
    hex::encode(Sha256::digest(format!("{user_id}:{password}").as_bytes()))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub struct Store {
    conn: Mutex<Connection>,
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        first_name: r.get(3)?,
        last_name: r.get(4)?,
        create_at: r.get(5)?,
    })
}

fn channel_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: r.get(0)?,
        team_id: r.get(1)?,
        name: r.get(2)?,
        display_name: r.get(3)?,
        kind: r.get(4)?,
        create_at: r.get(5)?,
    })
}

fn post_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Post> {
    Ok(Post {
        id: r.get(0)?,
        channel_id: r.get(1)?,
        user_id: r.get(2)?,
        root_id: r.get(3)?,
        message: r.get(4)?,
        create_at: r.get(5)?,
    })
}

const USER_COLS: &str = "id, username, email, first_name, last_name, create_at";
const CHANNEL_COLS: &str = "id, team_id, name, display_name, type, create_at";
const POST_COLS: &str = "id, channel_id, user_id, root_id, message, create_at";

impl Store {
    pub fn open(path: &Path) -> Result<Store, ChatError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create_user(&self, username: &str, email: &str, password: &str, first: &str, last: &str) -> Result<User, ChatError> {
        let user = User {
            id: new_id(),
            username: username.to_string(),
            email: email.to_string(),
            first_name: first.to_string(),
            last_name: last.to_string(),
            create_at: now_ms(),
        };
        let hash = hash_password(&user.id, password);
        let r = self.conn().execute(
            "INSERT INTO users (id, username, email, first_name, last_name, password_hash, create_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![user.id, user.username, user.email, user.first_name, user.last_name, hash, user.create_at],
        );
        match r {
            Ok(_) => Ok(user),
            Err(e) if is_unique_violation(&e) => Err(ChatError::Conflict("username or email already taken".into())),
            Err(e) => Err(e.into()),
        }
    }

    pub fn user(&self, id: &str) -> Result<User, ChatError> {
        self.conn()
            .query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id], user_row)
            .optional()?
            .ok_or_else(|| ChatError::NotFound(format!("user {id}")))
    }

    /// Checks the password of the user named by username or email and opens a session.
    pub fn login(&self, login_id: &str, password: &str) -> Result<(User, String), ChatError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = ?1 OR email = ?1"),
                [login_id],
                |r| Ok((user_row(r)?, r.get::<_, String>(6)?)),
            )
            .optional()?;
        let Some((user, hash)) = found else {
            return Err(ChatError::Unauthorized("wrong login id or password".into()));
        };
        if hash != hash_password(&user.id, password) {
            return Err(ChatError::Unauthorized("wrong login id or password".into()));
        }
        let token = new_id();
        conn.execute("INSERT INTO sessions (token, user_id, create_at) VALUES (?1, ?2, ?3)", params![token, user.id, now_ms()])?;
        Ok((user, token))
    }

    pub fn logout(&self, token: &str) -> Result<(), ChatError> {
        self.conn().execute("DELETE FROM sessions WHERE token = ?1", [token])?;
        Ok(())
    }

    pub fn session_user(&self, token: &str) -> Result<Option<String>, ChatError> {
        Ok(self
            .conn()
            .query_row("SELECT user_id FROM sessions WHERE token = ?1", [token], |r| r.get(0))
            .optional()?)
    }

    pub fn create_team(&self, creator: &str, name: &str, display_name: &str) -> Result<Team, ChatError> {
        let team = Team { id: new_id(), name: name.into(), display_name: display_name.into(), create_at: now_ms() };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let r = tx.execute(
            "INSERT INTO teams (id, name, display_name, create_at) VALUES (?1, ?2, ?3, ?4)",
            params![team.id, team.name, team.display_name, team.create_at],
        );
        if let Err(e) = r {
            return Err(if is_unique_violation(&e) { ChatError::Conflict(format!("team {name} exists")) } else { e.into() });
        }
        tx.execute("INSERT INTO team_members (team_id, user_id) VALUES (?1, ?2)", params![team.id, creator])?;
        tx.commit()?;
        Ok(team)
    }

    pub fn team_by_name(&self, name: &str) -> Result<Team, ChatError> {
        self.conn()
            .query_row("SELECT id, name, display_name, create_at FROM teams WHERE name = ?1", [name], |r| {
                Ok(Team { id: r.get(0)?, name: r.get(1)?, display_name: r.get(2)?, create_at: r.get(3)? })
            })
            .optional()?
            .ok_or_else(|| ChatError::NotFound(format!("team {name}")))
    }

    pub fn is_team_member(&self, team: &str, user: &str) -> Result<bool, ChatError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM team_members WHERE team_id = ?1 AND user_id = ?2", [team, user], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Returns the team's member count after the join, and whether the user was new to it.
    pub fn add_team_member(&self, team: &str, user: &str) -> Result<(i64, bool), ChatError> {
        let conn = self.conn();
        let exists: bool = conn.query_row("SELECT COUNT(*) FROM teams WHERE id = ?1", [team], |r| r.get::<_, i64>(0))? > 0;
        if !exists {
            return Err(ChatError::NotFound(format!("team {team}")));
        }
        let added = conn.execute("INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?1, ?2)", [team, user])? > 0;
        let count = conn.query_row("SELECT COUNT(*) FROM team_members WHERE team_id = ?1", [team], |r| r.get(0))?;
        Ok((count, added))
    }

    pub fn create_channel(&self, creator: &str, team_id: &str, name: &str, display_name: &str, kind: &str) -> Result<Channel, ChatError> {
        let channel = Channel {
            id: new_id(),
            team_id: team_id.into(),
            name: name.into(),
            display_name: display_name.into(),
            kind: kind.into(),
            create_at: now_ms(),
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let r = tx.execute(
            "INSERT INTO channels (id, team_id, name, display_name, type, create_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![channel.id, channel.team_id, channel.name, channel.display_name, channel.kind, channel.create_at],
        );
        if let Err(e) = r {
            return Err(if is_unique_violation(&e) { ChatError::Conflict(format!("channel {name} exists in the team")) } else { e.into() });
        }
        tx.execute(
            "INSERT INTO channel_members (channel_id, user_id, last_viewed_at) VALUES (?1, ?2, ?3)",
            params![channel.id, creator, channel.create_at],
        )?;
        tx.commit()?;
        Ok(channel)
    }

    /// The direct channel of two users, created on first use; the flag says whether it is new.
    pub fn direct_channel(&self, a: &str, b: &str) -> Result<(Channel, bool), ChatError> {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        let name = format!("{x}__{y}");
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let found = tx
            .query_row(&format!("SELECT {CHANNEL_COLS} FROM channels WHERE team_id = '' AND name = ?1"), [&name], channel_row)
            .optional()?;
        if let Some(c) = found {
            return Ok((c, false));
        }
        let channel = Channel { id: new_id(), team_id: String::new(), display_name: String::new(), name, kind: "D".into(), create_at: now_ms() };
        tx.execute(
            "INSERT INTO channels (id, team_id, name, display_name, type, create_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![channel.id, channel.team_id, channel.name, channel.display_name, channel.kind, channel.create_at],
        )?;
        for u in [x, y] {
            tx.execute(
                "INSERT OR IGNORE INTO channel_members (channel_id, user_id, last_viewed_at) VALUES (?1, ?2, ?3)",
                params![channel.id, u, channel.create_at],
            )?;
        }
        tx.commit()?;
        Ok((channel, true))
    }

    pub fn channel(&self, id: &str) -> Result<Channel, ChatError> {
        self.conn()
            .query_row(&format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = ?1"), [id], channel_row)
            .optional()?
            .ok_or_else(|| ChatError::NotFound(format!("channel {id}")))
    }

    pub fn channel_members(&self, channel: &str) -> Result<Vec<String>, ChatError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT user_id FROM channel_members WHERE channel_id = ?1")?;
        let rows = stmt.query_map([channel], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Returns whether the user was new to the channel.
    pub fn add_channel_member(&self, channel: &str, user: &str) -> Result<bool, ChatError> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO channel_members (channel_id, user_id, last_viewed_at) VALUES (?1, ?2, ?3)",
            params![channel, user, now_ms()],
        )? > 0)
    }

    /// Returns whether the user was a member.
    pub fn remove_channel_member(&self, channel: &str, user: &str) -> Result<bool, ChatError> {
        Ok(self.conn().execute("DELETE FROM channel_members WHERE channel_id = ?1 AND user_id = ?2", [channel, user])? > 0)
    }

    pub fn create_post(&self, user: &str, channel: &str, message: &str, root_id: &str) -> Result<Post, ChatError> {
        let post = Post {
            id: new_id(),
            channel_id: channel.into(),
            user_id: user.into(),
            root_id: root_id.into(),
            message: message.into(),
            create_at: now_ms(),
        };
        let conn = self.conn();
        if !root_id.is_empty() {
            let root_channel: Option<String> = conn
                .query_row("SELECT channel_id FROM posts WHERE id = ?1", [root_id], |r| r.get(0))
                .optional()?;
            if root_channel.as_deref() != Some(channel) {
                return Err(ChatError::BadRequest(format!("root_id {root_id} is not a post of channel {channel}")));
            }
        }
        let mut stmt = conn.prepare_cached(
            "INSERT INTO posts (id, channel_id, user_id, root_id, message, create_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        stmt.execute(params![post.id, post.channel_id, post.user_id, post.root_id, post.message, post.create_at])?;
        Ok(post)
    }

    pub fn post(&self, id: &str) -> Result<Post, ChatError> {
        self.conn()
            .query_row(&format!("SELECT {POST_COLS} FROM posts WHERE id = ?1"), [id], post_row)
            .optional()?
            .ok_or_else(|| ChatError::NotFound(format!("post {id}")))
    }

    /// The newest `limit` posts of a channel created after `since` (ms), oldest first.
    pub fn channel_posts(&self, channel: &str, since: i64, limit: i64) -> Result<Vec<Post>, ChatError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {POST_COLS} FROM posts WHERE channel_id = ?1 AND create_at > ?2 ORDER BY create_at DESC LIMIT ?3"
        ))?;
        let mut posts: Vec<Post> = stmt.query_map(params![channel, since, limit], post_row)?.collect::<Result<_, _>>()?;
        posts.reverse();
        Ok(posts)
    }

    /// Returns whether the reaction is new.
    pub fn add_reaction(&self, user: &str, post: &str, emoji: &str) -> Result<bool, ChatError> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO reactions (user_id, post_id, emoji_name, create_at) VALUES (?1, ?2, ?3, ?4)",
            params![user, post, emoji, now_ms()],
        )? > 0)
    }

    /// Marks the channel read for the user; returns how many posts were unread.
    pub fn view_channel(&self, user: &str, channel: &str) -> Result<i64, ChatError> {
        let conn = self.conn();
        let last: Option<i64> = conn
            .query_row(
                "SELECT last_viewed_at FROM channel_members WHERE channel_id = ?1 AND user_id = ?2",
                [channel, user],
                |r| r.get(0),
            )
            .optional()?;
        let Some(last) = last else {
            return Err(ChatError::Forbidden(format!("not a member of channel {channel}")));
        };
        let unread: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM posts WHERE channel_id = ?1 AND create_at > ?2")?
            .query_row(params![channel, last], |r| r.get(0))?;
        conn.prepare_cached("UPDATE channel_members SET last_viewed_at = ?3 WHERE channel_id = ?1 AND user_id = ?2")?
            .execute(params![channel, user, now_ms()])?;
        Ok(unread)
    }
}

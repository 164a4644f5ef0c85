//! Users, their API tokens, teams, memberships and share links.
//!
//! Tokens are stored as SHA-256 only; a share link's token is kept in clear
//! because it grants only the read-only view and its owner must be able to
//! list and copy it.

use shared::api::{Member, Role, ShareLink, TeamRole, TokenInfo, UserInfo};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::StoreError;
use super::{now, Store};
use crate::control::tokens::hash_token;

/// A user as the server needs it to authorize a call.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub site_admin: bool,
    pub created_at: String,
}

fn user_from_row(r: &AnyRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        site_admin: r.try_get::<i64, _>("site_admin")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

fn role_of(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| StoreError::Corrupt(format!("bad role {s} in store")))
}

/// Characters of a share link's token hash that name it.
const SHARE_ID_CHARS: usize = 12;

fn share_from_row(r: &AnyRow) -> Result<ShareLink, StoreError> {
    let hash: String = r.try_get("token")?;
    Ok(ShareLink {
        id: hash.chars().take(SHARE_ID_CHARS).collect(),
        token: None,
        url: None,
        service: r.try_get("service")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

impl Store {
    // ---- users and tokens ---------------------------------------------------

    pub async fn token_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Stores a new token of `user_id`; returns its id.
    pub async fn insert_token(
        &self,
        user_id: i64,
        name: &str,
        hash: &str,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "INSERT INTO api_tokens (name, hash, role, created_at, user_id) VALUES ($1, $2, 'user', $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(hash)
        .bind(now())
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("id")?)
    }

    /// The user owning an unrevoked token with this hash.
    /// The user of the live API token whose hash is `hash`, and the token's id.
    pub async fn token_user(&self, hash: &str) -> Result<Option<(UserRow, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT u.*, t.id AS token_id FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| Ok((user_from_row(r)?, r.try_get("token_id")?)))
            .transpose()
    }

    pub async fn tokens_of(&self, user_id: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, revoked_at FROM api_tokens WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes token `id` of `user_id`; false when it has no such token.
    pub async fn revoke_token(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3",
        )
        .bind(now())
        .bind(id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn create_user(&self, name: &str, site_admin: bool) -> Result<UserRow, StoreError> {
        if self.user(name).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "a user named '{name}' already exists"
            )));
        }
        sqlx::query("INSERT INTO users (name, site_admin, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(site_admin as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        self.user(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("user '{name}' vanished")))
    }

    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// The teams `user_id` belongs to, by name.
    pub async fn teams_of(&self, user_id: i64) -> Result<Vec<TeamRole>, StoreError> {
        let rows =
            sqlx::query("SELECT team, role FROM memberships WHERE user_id = $1 ORDER BY team")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TeamRole {
                    team: r.try_get("team")?,
                    role: role_of(&r.try_get::<String, _>("role")?)?,
                })
            })
            .collect()
    }

    pub async fn user_info(&self, u: &UserRow) -> Result<UserInfo, StoreError> {
        Ok(UserInfo {
            name: u.name.clone(),
            site_admin: u.site_admin,
            created_at: u.created_at.clone(),
            teams: self.teams_of(u.id).await?,
        })
    }

    // ---- teams --------------------------------------------------------------

    /// The team's creation time, or None when there is no such team.
    pub async fn team(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT created_at FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("created_at")).transpose()?)
    }

    /// Whether the team's viewers see its services' secrets.
    pub async fn viewers_see_secrets(&self, team: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT viewers_see_secrets FROM teams WHERE name = $1")
            .bind(team)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("viewers_see_secrets")? != 0,
            None => false,
        })
    }

    pub async fn set_viewers_see_secrets(&self, team: &str, on: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE teams SET viewers_see_secrets = $1 WHERE name = $2")
            .bind(i64::from(on))
            .bind(team)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn teams(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM teams ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Creates a team with `admin_id` as its first admin.
    pub async fn create_team(&self, name: &str, admin_id: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "a team named '{name}' already exists"
            )));
        }
        sqlx::query("INSERT INTO teams (name, created_at) VALUES ($1, $2)")
            .bind(name)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO memberships (team, user_id, role) VALUES ($1, $2, 'admin')")
            .bind(name)
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn members(&self, team: &str) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.team = $1 ORDER BY u.name",
        )
        .bind(team)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user: r.try_get("name")?,
                    role: role_of(&r.try_get::<String, _>("role")?)?,
                })
            })
            .collect()
    }

    /// Sets (or, with `None`, removes) a membership. Refuses to leave a team
    /// without an admin, so someone can always manage it.
    pub async fn set_membership(
        &self,
        team: &str,
        user_id: i64,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // The team's row is locked until commit, so two changes at once
        // cannot each leave the other's admin as the last one and then both
        // remove theirs.
        sqlx::query(self.locking("SELECT name FROM teams WHERE name = $1"))
            .bind(team)
            .fetch_optional(&mut *tx)
            .await?;
        match role {
            Some(role) => {
                sqlx::query(
                    "INSERT INTO memberships (team, user_id, role) VALUES ($1, $2, $3)
                     ON CONFLICT (team, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(team)
                .bind(user_id)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM memberships WHERE team = $1 AND user_id = $2")
                    .bind(team)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let admins: i64 =
            sqlx::query("SELECT COUNT(*) FROM memberships WHERE team = $1 AND role = 'admin'")
                .bind(team)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if admins == 0 {
            return Err(StoreError::Conflict(format!(
                "team '{team}' would have no admin left; make someone else admin first"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- share links --------------------------------------------------------

    /// Stores a link by its token's hash; the answer carries the token and
    /// URL, which are not kept.
    pub async fn create_share(
        &self,
        token: &str,
        service: &str,
        created_by: &str,
    ) -> Result<ShareLink, StoreError> {
        let hash = hash_token(token);
        sqlx::query(
            "INSERT INTO share_links (token, service, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&hash)
        .bind(service)
        .bind(created_by)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT * FROM share_links WHERE token = $1")
            .bind(&hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(ShareLink {
            token: Some(token.to_string()),
            url: Some(format!("/s/{token}")),
            ..share_from_row(&row)?
        })
    }

    /// Links stored before their tokens were hashed (`s_…` in the clear)
    /// get their hash instead: run at every start, a no-op once done.
    pub async fn hash_share_tokens(&self) -> Result<u64, StoreError> {
        let rows = sqlx::query("SELECT token FROM share_links WHERE substr(token, 1, 2) = 's_'")
            .fetch_all(&self.pool)
            .await?;
        let mut n = 0;
        for r in rows {
            let plain: String = r.try_get("token")?;
            n += sqlx::query("UPDATE share_links SET token = $1 WHERE token = $2")
                .bind(hash_token(&plain))
                .bind(&plain)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    /// The unrevoked links of a service, oldest first.
    pub async fn shares(&self, service: &str) -> Result<Vec<ShareLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM share_links WHERE service = $1 AND revoked_at IS NULL ORDER BY created_at, token",
        )
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(share_from_row).collect()
    }

    /// Revokes a link of `service`, named by its id (as listed) or its
    /// token; false when it has no such live link.
    pub async fn revoke_share(&self, service: &str, link: &str) -> Result<bool, StoreError> {
        let id: String = if link.starts_with("s_") {
            hash_token(link)
        } else {
            link.to_string()
        };
        // An id is a hex prefix of the hash, never shorter than listed.
        if id.len() < SHARE_ID_CHARS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let r = sqlx::query(
            "UPDATE share_links SET revoked_at = $1
             WHERE substr(token, 1, length($2)) = $2 AND service = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(&id)
        .bind(service)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The service a live link shows.
    pub async fn shared_service(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT service FROM share_links WHERE token = $1 AND revoked_at IS NULL")
                .bind(hash_token(token))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("service")).transpose()?)
    }
}

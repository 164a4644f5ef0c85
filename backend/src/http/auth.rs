//! Who is calling: the token a request carries and the [`Caller`]
//! extractor that resolves a management token to its user and teams.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::control::store::UserRow;
pub use crate::control::tokens::{hash_token, new_token, tokens_equal};
use crate::http::error::AppError;
use crate::http::state::AppState;
use shared::api::{Me, Role, TeamRole};

/// The token a request carries: `Authorization: Bearer T` (or a raw `T`, as
/// the EAS SDK sends it), else, on a WebSocket handshake only (a browser
/// cannot set headers there), a `whet.token.*` subprotocol or `?token=T`.
/// Everywhere else a query token is ignored: URLs end up in proxies' and
/// browsers' histories. The server's own request log records paths only.
pub fn request_token(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let t = v.strip_prefix("Bearer ").unwrap_or(v).trim();
        if !t.is_empty() {
            return Some(t.to_string());
        }
    }
    let websocket = headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return None;
    }
    // A browser's WebSocket cannot send headers but can offer subprotocols:
    // the console offers `whet.token.<hex of the token>` beside
    // `WS_PROTOCOL`, so the token stays out of URLs (and of the logs that
    // record them). The server picks `WS_PROTOCOL`, never echoing the token.
    if let Some(t) = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_TOKEN_PREFIX))
        .and_then(|hex| hex::decode(hex).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|t| !t.trim().is_empty())
    {
        return Some(t);
    }
    uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
    })
}

pub use shared::api::{WS_PROTOCOL, WS_TOKEN_PREFIX};

/// A caller holding a valid management token: the token's user and the
/// teams they belong to, read once per request.
pub struct Caller {
    pub user: UserRow,
    pub teams: Vec<TeamRole>,
    /// The API token this request was made with, and its hash (what a long
    /// request, a log stream, checks again to end when it is revoked).
    pub token_id: i64,
    pub token_hash: String,
}

impl Caller {
    /// The caller's role in `team`; site admins are admin of every team.
    pub fn role_in(&self, team: &str) -> Option<Role> {
        self.me().role_in(team)
    }

    pub fn me(&self) -> Me {
        Me {
            user: self.user.name.clone(),
            site_admin: self.user.site_admin,
            teams: self.teams.clone(),
            token_id: Some(self.token_id),
        }
    }

    /// Site admins only (users and teams are managed by them).
    pub fn require_site_admin(&self, what: &str) -> Result<(), AppError> {
        if self.user.site_admin {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("{what} needs a site admin")))
        }
    }

    /// Checks the caller's role in `team`. A caller outside the team gets
    /// 404 (`not_found`), so names of other teams' things do not leak; a
    /// member whose role is too low gets 403 naming the role needed.
    pub fn require(
        &self,
        team: &str,
        need: Role,
        action: &str,
        not_found: &str,
    ) -> Result<Role, AppError> {
        match self.role_in(team) {
            None => Err(AppError::NotFound(not_found.to_string())),
            Some(r) if r >= need => Ok(r),
            Some(r) => Err(AppError::Forbidden(format!(
                "{action} needs the {} role in team '{team}'; you are {}",
                need.as_str(),
                r.as_str()
            ))),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = request_token(&parts.headers, &parts.uri) else {
            return Err(AppError::Unauthorized(
                "missing API token: send `Authorization: Bearer <token>`".into(),
            ));
        };
        Caller::of_token_hash(state, &hash_token(&token))
            .await?
            .ok_or_else(|| AppError::Unauthorized("invalid or revoked API token".into()))
    }
}

impl Caller {
    /// The caller an API token (by its hash) stands for now: `None` once it
    /// is revoked. What a request resolves first, and what a long-lived
    /// request (a log stream) looks at again.
    pub async fn of_token_hash(
        state: &AppState,
        token_hash: &str,
    ) -> Result<Option<Caller>, crate::control::StoreError> {
        let Some((user, token_id)) = state.store.token_user(token_hash).await? else {
            return Ok(None);
        };
        let teams = state.store.teams_of(user.id).await?;
        Ok(Some(Caller {
            user,
            teams,
            token_id,
            token_hash: token_hash.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, Uri};

    #[test]
    fn a_query_token_counts_on_a_websocket_handshake_only() {
        let uri: Uri = "/api/v2/services/a/logs/stream?after=0&token=secret"
            .parse()
            .unwrap();
        assert_eq!(request_token(&HeaderMap::new(), &uri), None);
        let mut ws = HeaderMap::new();
        ws.insert(
            axum::http::header::UPGRADE,
            HeaderValue::from_static("websocket"),
        );
        assert_eq!(request_token(&ws, &uri).as_deref(), Some("secret"));
        let mut bearer = HeaderMap::new();
        bearer.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer header-token"),
        );
        assert_eq!(
            request_token(&bearer, &uri).as_deref(),
            Some("header-token")
        );
    }
}

//! Users, their API tokens, teams and memberships under `/api/v2`.
//!
//! Site admins create users and teams; a team's admins manage its members;
//! every user manages their own tokens. Teams a caller does not belong to do
//! not exist for them (404), like other teams' services.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use shared::api::{
    check_account_name, CreateTeam, CreateToken, CreateUser, Me, NewToken, Role, SetMember,
    TeamDashboard, TeamDetail, TeamRole, TokenInfo, UserInfo,
};

use crate::control::store::UserRow;
use crate::http::auth::{hash_token, new_token, Caller};
use crate::http::error::AppError;
use crate::http::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/me", get(me))
        .route("/api/v2/teams", get(list_teams).post(create_team))
        .route("/api/v2/teams/{team}", get(team_detail).patch(update_team))
        .route("/api/v2/teams/{team}/dashboard", get(dashboard))
        .route(
            "/api/v2/teams/{team}/members/{user}",
            put(set_member).delete(remove_member),
        )
        .route("/api/v2/users", get(list_users).post(create_user))
        .route("/api/v2/users/{user}", get(user_detail))
        .route(
            "/api/v2/users/{user}/tokens",
            get(list_tokens).post(create_token),
        )
        .route("/api/v2/users/{user}/tokens/{id}", delete(revoke_token))
}

async fn me(caller: Caller) -> Json<Me> {
    Json(caller.me())
}

fn team_not_found(team: &str) -> String {
    format!("no team named '{team}'")
}

/// Teams the caller sees, with their role (site admins see every team).
async fn list_teams(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<TeamRole>>, AppError> {
    if !caller.user.site_admin {
        return Ok(Json(caller.teams.clone()));
    }
    let teams = state.store.teams().await?;
    Ok(Json(
        teams
            .into_iter()
            .map(|team| TeamRole {
                role: caller.role_in(&team).unwrap_or(Role::Admin),
                team,
            })
            .collect(),
    ))
}

async fn team_detail_of(
    state: &AppState,
    team: &str,
    your_role: Role,
) -> Result<TeamDetail, AppError> {
    let created_at = state
        .store
        .team(team)
        .await?
        .ok_or_else(|| AppError::NotFound(team_not_found(team)))?;
    Ok(TeamDetail {
        name: team.to_string(),
        created_at,
        members: state.store.members(team).await?,
        your_role,
        viewers_see_secrets: state.store.viewers_see_secrets(team).await?,
    })
}

/// Changes a team's settings (its admins).
async fn update_team(
    caller: Caller,
    State(state): State<AppState>,
    Path(team): Path<String>,
    Json(req): Json<shared::api::TeamSettings>,
) -> Result<Json<TeamDetail>, AppError> {
    let role = caller.require(
        &team,
        Role::Admin,
        "changing a team's settings",
        &team_not_found(&team),
    )?;
    if let Some(on) = req.viewers_see_secrets {
        state.store.set_viewers_see_secrets(&team, on).await?;
    }
    Ok(Json(team_detail_of(&state, &team, role).await?))
}

async fn create_team(
    caller: Caller,
    State(state): State<AppState>,
    Json(req): Json<CreateTeam>,
) -> Result<(StatusCode, Json<TeamDetail>), AppError> {
    caller.require_site_admin("creating a team")?;
    check_account_name("team", &req.name).map_err(|e| AppError::invalid("name", e))?;
    state.store.create_team(&req.name, caller.user.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(team_detail_of(&state, &req.name, Role::Admin).await?),
    ))
}

async fn team_detail(
    caller: Caller,
    State(state): State<AppState>,
    Path(team): Path<String>,
) -> Result<Json<TeamDetail>, AppError> {
    let role = caller.require(
        &team,
        Role::Viewer,
        "viewing a team",
        &team_not_found(&team),
    )?;
    Ok(Json(team_detail_of(&state, &team, role).await?))
}

async fn user_or_404(state: &AppState, name: &str) -> Result<UserRow, AppError> {
    state
        .store
        .user(name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no user named '{name}'")))
}

async fn set_member(
    caller: Caller,
    State(state): State<AppState>,
    Path((team, user)): Path<(String, String)>,
    Json(req): Json<SetMember>,
) -> Result<Json<TeamDetail>, AppError> {
    let role = caller.require(
        &team,
        Role::Admin,
        "managing members",
        &team_not_found(&team),
    )?;
    // Checked after the role: only team admins learn which users exist.
    let u = user_or_404(&state, &user).await?;
    if state.store.team(&team).await?.is_none() {
        return Err(AppError::NotFound(team_not_found(&team)));
    }
    state
        .store
        .set_membership(&team, u.id, Some(req.role))
        .await?;
    Ok(Json(team_detail_of(&state, &team, role).await?))
}

async fn remove_member(
    caller: Caller,
    State(state): State<AppState>,
    Path((team, user)): Path<(String, String)>,
) -> Result<Json<TeamDetail>, AppError> {
    let role = caller.require(
        &team,
        Role::Admin,
        "managing members",
        &team_not_found(&team),
    )?;
    let u = user_or_404(&state, &user).await?;
    state.store.set_membership(&team, u.id, None).await?;
    state.revoke();
    Ok(Json(team_detail_of(&state, &team, role).await?))
}

/// A team's services with aggregate numbers and the last hour's traffic.
async fn dashboard(
    caller: Caller,
    State(state): State<AppState>,
    Path(team): Path<String>,
) -> Result<Json<TeamDashboard>, AppError> {
    caller.require(
        &team,
        Role::Viewer,
        "viewing a team",
        &team_not_found(&team),
    )?;
    if state.store.team(&team).await?.is_none() {
        return Err(AppError::NotFound(team_not_found(&team)));
    }
    let mut services = Vec::new();
    for row in state.store.list_services().await? {
        if row.team == team {
            services.push(crate::http::api::summary_of(&state, row).await?);
        }
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let traffic = crate::control::recent::last_hour(&names);
    Ok(Json(crate::control::recent::dashboard(
        team, services, traffic,
    )))
}

async fn list_users(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<UserInfo>>, AppError> {
    caller.require_site_admin("listing users")?;
    let mut out = Vec::new();
    for u in state.store.users().await? {
        out.push(state.store.user_info(&u).await?);
    }
    Ok(Json(out))
}

async fn create_user(
    caller: Caller,
    State(state): State<AppState>,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserInfo>), AppError> {
    caller.require_site_admin("creating a user")?;
    check_account_name("user", &req.name).map_err(|e| AppError::invalid("name", e))?;
    let u = state.store.create_user(&req.name, req.site_admin).await?;
    Ok((StatusCode::CREATED, Json(state.store.user_info(&u).await?)))
}

/// The user `name` when the caller is that user or a site admin. Others get
/// 404, so user names do not leak.
async fn self_or_site_admin(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<UserRow, AppError> {
    if caller.user.name == name {
        return Ok(caller.user.clone());
    }
    if !caller.user.site_admin {
        return Err(AppError::NotFound(format!("no user named '{name}'")));
    }
    user_or_404(state, name).await
}

async fn user_detail(
    caller: Caller,
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<UserInfo>, AppError> {
    let u = self_or_site_admin(&state, &caller, &user).await?;
    Ok(Json(state.store.user_info(&u).await?))
}

async fn list_tokens(
    caller: Caller,
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Vec<TokenInfo>>, AppError> {
    let u = self_or_site_admin(&state, &caller, &user).await?;
    Ok(Json(state.store.tokens_of(u.id).await?))
}

/// Creates a token; the answer is the only place it is ever shown.
async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(user): Path<String>,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<NewToken>), AppError> {
    let u = self_or_site_admin(&state, &caller, &user).await?;
    let label = req.name.trim();
    if label.is_empty() || label.len() > 100 {
        return Err(AppError::invalid(
            "name",
            "expected a label of 1 to 100 characters, e.g. \"laptop\"",
        ));
    }
    let token = new_token("whet_");
    let id = state
        .store
        .insert_token(u.id, label, &hash_token(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            id,
            name: label.to_string(),
            token,
        }),
    ))
}

async fn revoke_token(
    caller: Caller,
    State(state): State<AppState>,
    Path((user, id)): Path<(String, i64)>,
) -> Result<StatusCode, AppError> {
    let u = self_or_site_admin(&state, &caller, &user).await?;
    if state.store.revoke_token(u.id, id).await? {
        state.revoke();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound(format!(
            "user '{user}' has no token {id}"
        )))
    }
}

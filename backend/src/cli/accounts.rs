//! `whet whoami`, `whet team …`, `whet user …` and `whet share …`: users,
//! teams, roles, API tokens and share links from the command line.

use clap::Subcommand;
use reqwest::Method;
use shared::api::{
    CreateTeam, CreateToken, CreateUser, Me, NewToken, Role, SetMember, ShareLink, TeamDashboard,
    TeamDetail, TeamRole, TokenInfo, UserInfo,
};

use crate::cli::client::{Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum TeamCmd {
    /// Teams you belong to (site admins: all), with your role.
    List,
    /// Create a team (site admins); you become its first admin.
    Create { team: String },
    /// A team's members and their roles.
    Show { team: String },
    /// Add a member or change their role (team admins).
    Add {
        team: String,
        user: String,
        /// admin, deployer or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Remove a member (team admins).
    Remove { team: String, user: String },
    /// The team's services with aggregate numbers and last-hour traffic.
    Dashboard { team: String },
    /// Change a team's settings (team admins).
    Set {
        team: String,
        /// Let viewers see the services' prediction tokens and share links
        /// (deployers and admins always do).
        #[arg(long)]
        viewers_see_secrets: Option<bool>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// All users (site admins).
    List,
    /// Create a user (site admins).
    Create {
        user: String,
        /// Make the user a site admin (manages users and teams).
        #[arg(long)]
        site_admin: bool,
    },
    /// A user's teams and roles.
    Show { user: String },
    /// Create an API token for a user (yourself, or anyone as a site admin);
    /// the token is printed once and never again.
    Token {
        user: String,
        /// A label for the token, e.g. "laptop".
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// A user's API tokens (labels and dates; never the secret).
    Tokens { user: String },
    /// Revoke one of a user's API tokens by id.
    Revoke { user: String, id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum ShareCmd {
    /// Create a read-only link to a service's status, log and report.
    Create { name: String },
    /// A service's live share links.
    List { name: String },
    /// Revoke a share link (its id as listed, or its URL); it answers 404
    /// from then on.
    /// (Not named `token`: that is the global API-token option's id.)
    Revoke { name: String, link: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("expected admin, deployer or viewer, got '{s}'"))
}

fn json_body<T: serde::Serialize>(v: &T) -> Result<Option<reqwest::Body>, ClientError> {
    serde_json::to_vec(v)
        .map(|b| Some(b.into()))
        .map_err(|e| ClientError::Usage(e.to_string()))
}

fn print_team(t: &TeamDetail) {
    println!(
        "Team {} (created {}; you are {})",
        t.name,
        t.created_at,
        t.your_role.as_str()
    );
    println!(
        "Viewers see tokens and share links: {}",
        if t.viewers_see_secrets { "yes" } else { "no" }
    );
    println!("{:<28} ROLE", "USER");
    for m in &t.members {
        println!("{:<28} {}", m.user, m.role.as_str());
    }
}

fn print_roles(teams: &[TeamRole]) {
    println!("{:<28} ROLE", "TEAM");
    for t in teams {
        println!("{:<28} {}", t.team, t.role.as_str());
    }
}

pub async fn whoami(client: &Client) -> Result<i32, ClientError> {
    let me: Me = client.get("/api/v2/me").await?;
    println!(
        "{}{}",
        me.user,
        if me.site_admin { " (site admin)" } else { "" }
    );
    print_roles(&me.teams);
    Ok(0)
}

pub async fn team(client: &Client, cmd: TeamCmd) -> Result<i32, ClientError> {
    match cmd {
        TeamCmd::List => {
            let teams: Vec<TeamRole> = client.get("/api/v2/teams").await?;
            print_roles(&teams);
        }
        TeamCmd::Create { team } => {
            let t: TeamDetail = client
                .send(
                    Method::POST,
                    "/api/v2/teams",
                    json_body(&CreateTeam { name: team })?,
                )
                .await?;
            print_team(&t);
        }
        TeamCmd::Show { team } => print_team(&client.get(&format!("/api/v2/teams/{team}")).await?),
        TeamCmd::Add { team, user, role } => {
            let t: TeamDetail = client
                .send(
                    Method::PUT,
                    &format!("/api/v2/teams/{team}/members/{user}"),
                    json_body(&SetMember { role })?,
                )
                .await?;
            print_team(&t);
        }
        TeamCmd::Set {
            team,
            viewers_see_secrets,
        } => {
            let t: TeamDetail = client
                .send(
                    Method::PATCH,
                    &format!("/api/v2/teams/{team}"),
                    json_body(&shared::api::TeamSettings {
                        viewers_see_secrets,
                    })?,
                )
                .await?;
            print_team(&t);
        }
        TeamCmd::Remove { team, user } => {
            let t: TeamDetail = client
                .send(
                    Method::DELETE,
                    &format!("/api/v2/teams/{team}/members/{user}"),
                    None,
                )
                .await?;
            print_team(&t);
        }
        TeamCmd::Dashboard { team } => {
            let d: TeamDashboard = client
                .get(&format!("/api/v2/teams/{team}/dashboard"))
                .await?;
            let by_status: Vec<String> = d
                .by_status
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            println!("Team:             {}", d.team);
            println!(
                "Services:         {} ({})",
                d.services.len(),
                by_status.join(", ")
            );
            println!(
                "Instances:        {}/{} running",
                d.running_instances, d.total_instances
            );
            println!(
                "Median speedup:   {}",
                d.median_speedup
                    .map(|x| format!("{x:.2}x"))
                    .unwrap_or_else(|| "-".into())
            );
            println!(
                "Last hour:        {} requests, p50 {}",
                d.requests_last_hour,
                d.p50_ms_last_hour
                    .map(|x| format!("{x:.2} ms"))
                    .unwrap_or_else(|| "-".into())
            );
            for s in &d.services {
                println!(
                    "  {:<28} {:<9} {}/{}",
                    s.name,
                    s.status.as_str(),
                    s.running_instances,
                    s.instances
                );
            }
        }
    }
    Ok(0)
}

pub async fn user(client: &Client, cmd: UserCmd) -> Result<i32, ClientError> {
    match cmd {
        UserCmd::List => {
            let users: Vec<UserInfo> = client.get("/api/v2/users").await?;
            println!("{:<28} {:<10} TEAMS", "USER", "SITE ADMIN");
            for u in users {
                let teams: Vec<String> = u
                    .teams
                    .iter()
                    .map(|t| format!("{}:{}", t.team, t.role.as_str()))
                    .collect();
                println!(
                    "{:<28} {:<10} {}",
                    u.name,
                    if u.site_admin { "yes" } else { "no" },
                    teams.join(" ")
                );
            }
        }
        UserCmd::Create { user, site_admin } => {
            let u: UserInfo = client
                .send(
                    Method::POST,
                    "/api/v2/users",
                    json_body(&CreateUser {
                        name: user,
                        site_admin,
                    })?,
                )
                .await?;
            println!(
                "created user {}{}",
                u.name,
                if u.site_admin { " (site admin)" } else { "" }
            );
            println!(
                "next: `whet team add TEAM {} --role viewer` and `whet user token {}`",
                u.name, u.name
            );
        }
        UserCmd::Show { user } => {
            let u: UserInfo = client.get(&format!("/api/v2/users/{user}")).await?;
            println!(
                "{}{} (created {})",
                u.name,
                if u.site_admin { " (site admin)" } else { "" },
                u.created_at
            );
            print_roles(&u.teams);
        }
        UserCmd::Token { user, name } => {
            let t: NewToken = client
                .send(
                    Method::POST,
                    &format!("/api/v2/users/{user}/tokens"),
                    json_body(&CreateToken { name })?,
                )
                .await?;
            eprintln!(
                "token {} ({}) for {user}; it is shown only now:",
                t.id, t.name
            );
            println!("{}", t.token);
        }
        UserCmd::Tokens { user } => {
            let tokens: Vec<TokenInfo> =
                client.get(&format!("/api/v2/users/{user}/tokens")).await?;
            println!("{:>5} {:<20} {:<26} REVOKED", "ID", "NAME", "CREATED");
            for t in tokens {
                println!(
                    "{:>5} {:<20} {:<26} {}",
                    t.id,
                    t.name,
                    t.created_at,
                    t.revoked_at.unwrap_or_else(|| "-".into())
                );
            }
        }
        UserCmd::Revoke { user, id } => {
            let _: serde_json::Value = client
                .send(
                    Method::DELETE,
                    &format!("/api/v2/users/{user}/tokens/{id}"),
                    None,
                )
                .await?;
            println!("revoked token {id} of {user}");
        }
    }
    Ok(0)
}

pub async fn share(client: &Client, cmd: ShareCmd) -> Result<i32, ClientError> {
    match cmd {
        ShareCmd::Create { name } => {
            let l: ShareLink = client
                .send(
                    Method::POST,
                    &format!("/api/v2/services/{name}/shares"),
                    None,
                )
                .await?;
            println!("{}{}", client.server, l.url.unwrap_or_default());
            eprintln!(
                "link {}: shown this once (only its hash is kept); `whet share revoke {name} {}` ends it",
                l.id, l.id
            );
        }
        ShareCmd::List { name } => {
            let links: Vec<ShareLink> = client
                .get(&format!("/api/v2/services/{name}/shares"))
                .await?;
            println!("{:<14} {:<20} CREATED", "LINK", "BY");
            for l in links {
                println!("{:<14} {:<20} {}", l.id, l.created_by, l.created_at);
            }
        }
        ShareCmd::Revoke { name, link } => {
            // The id as listed, or the whole URL as printed by `share create`.
            let token = link.rsplit('/').next().unwrap_or(&link).to_string();
            let _: serde_json::Value = client
                .send(
                    Method::DELETE,
                    &format!("/api/v2/services/{name}/shares/{token}"),
                    None,
                )
                .await?;
            println!("revoked the share link of {name}");
        }
    }
    Ok(0)
}

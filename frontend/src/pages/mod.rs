//! One module per route.

mod account;
mod admin;
mod new_service;
mod service;
mod services;
mod shared;
mod signin;
mod team;
mod team_settings;

pub use account::AccountPage;
pub use admin::AdminPage;
pub use new_service::NewServicePage;
pub use service::ServicePage;
pub use services::ServicesPage;
pub use shared::SharedPage;
pub use signin::SignInPage;
pub use team::TeamDashboardPage;
pub use team_settings::TeamSettingsPage;

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::components::BackToServices;

/// A path parameter of the current route (`:name`, `:team`, `:token`) as a
/// memo: a page keyed on it starts afresh when it changes, and only then.
/// One function for every page, so one copy of the memo's code.
pub fn route_param(key: &'static str) -> Memo<String> {
    let params = use_params_map();
    Memo::new(move |_| params.read().get(key).unwrap_or_default())
}

#[component]
pub fn NotFoundPage() -> impl IntoView {
    view! {
        <h1>"No such page"</h1>
        <BackToServices/>
    }
}

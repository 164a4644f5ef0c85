//! One module per route.

mod new_service;
mod service;
mod services;
mod signin;

pub use new_service::NewServicePage;
pub use service::ServicePage;
pub use services::ServicesPage;
pub use signin::SignInPage;

use leptos::prelude::*;

use crate::components::BackToServices;

#[component]
pub fn NotFoundPage() -> impl IntoView {
    view! {
        <h1>"No such page"</h1>
        <BackToServices/>
    }
}

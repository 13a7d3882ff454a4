//! The frame around every page.

use maud::{DOCTYPE, Markup, html};

/// The dashboard's sections, in menu order: (path, title).
pub const SECTIONS: [(&str, &str); 5] = [
    ("/apps", "Apps"),
    ("/storage", "Storage"),
    ("/backups", "Backups"),
    ("/domain", "Domain"),
    ("/system", "System"),
];

/// A page outside the dashboard (setup, login): centred card, no menu.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main.card {
                    (brand())
                    (body)
                }
            }
        }
    }
}

/// A dashboard page: the menu with `active` marked, and a logout button.
pub fn dashboard(
    title: &str,
    active: &str,
    device_name: &str,
    csrf_token: &str,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    (brand())
                    span.device { (device_name) ".local" }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf_token" value=(csrf_token);
                        button type="submit" { "Log out" }
                    }
                }
                nav.sections aria-label="Sections" {
                    @for (path, name) in SECTIONS {
                        @if path == active {
                            a href=(path) aria-current="page" { (name) }
                        } @else {
                            a href=(path) { (name) }
                        }
                    }
                }
                main.content {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · ddaemon" }
            link rel="stylesheet" href="/assets/style.css";
            link rel="icon" href="/assets/logo.svg" type="image/svg+xml";
        }
    }
}

fn brand() -> Markup {
    html! {
        a.brand href="/" {
            img src="/assets/logo.svg" alt="" width="28" height="28";
            span { "ddaemon" }
        }
    }
}

/// A form's error summary and per-field messages.
pub fn field_error(id: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.field-error id=(id) role="alert" { (message) }
        }
    }
}

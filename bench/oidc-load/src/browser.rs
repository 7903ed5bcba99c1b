//! A tiny "browser": a cookie jar, a generic HTML form parser and a driver
//! that follows redirects and submits login / consent forms until the
//! provider redirects to the client's redirect_uri.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Url};

/// Cookies by name, for one host (path, domain and flags are ignored).
#[derive(Default, Debug)]
pub struct Jar(HashMap<String, String>);

impl Jar {
    pub fn store(&mut self, headers: &HeaderMap) {
        for line in headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let mut parts = line.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = parts.any(|attr| {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                let (k, v) = (k.trim(), v.trim());
                (k.eq_ignore_ascii_case("max-age") && v.parse::<i64>().is_ok_and(|n| n <= 0))
                    || (k.eq_ignore_ascii_case("expires") && v.contains("1970"))
            });
            if expired {
                self.0.remove(name.trim());
            } else {
                self.0
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    pub fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            self.0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

type Attrs = HashMap<String, String>;

#[derive(Debug)]
pub struct Form {
    action: String,
    inputs: Vec<Attrs>,
    buttons: Vec<Attrs>,
}

static FORM: LazyLock<Regex> = LazyLock::new(|| re(r"(?is)<form\b([^>]*)>(.*?)</form\s*>"));
static CONTROL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)<(input|button)\b([^>]*)>"));
static ATTR: LazyLock<Regex> =
    LazyLock::new(|| re(r#"([^\s"'=<>/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?"#));
static ENTITY: LazyLock<Regex> = LazyLock::new(|| re(r"&(#[xX][0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);"));

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

fn decode_entities(s: &str) -> String {
    ENTITY
        .replace_all(s, |c: &regex::Captures| {
            let e = &c[1];
            let code = if let Some(hex) = e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok()
            } else if let Some(dec) = e.strip_prefix('#') {
                dec.parse().ok()
            } else {
                match e {
                    "amp" => Some(38),
                    "lt" => Some(60),
                    "gt" => Some(62),
                    "quot" => Some(34),
                    "apos" => Some(39),
                    _ => None,
                }
            };
            code.and_then(char::from_u32)
                .map_or_else(|| c[0].to_owned(), String::from)
        })
        .into_owned()
}

fn attributes(s: &str) -> Attrs {
    ATTR.captures_iter(s)
        .map(|c| {
            let value = c
                .get(2)
                .or(c.get(3))
                .or(c.get(4))
                .map_or("", |m| m.as_str());
            (c[1].to_ascii_lowercase(), decode_entities(value))
        })
        .collect()
}

/// The first `method="post"` form of a page, with its inputs and buttons
/// (including controls outside it that name it with `form="ID"`).
pub fn post_form(html: &str) -> Option<Form> {
    let controls: Vec<(usize, bool, Attrs)> = CONTROL
        .captures_iter(html)
        .map(|c| {
            (
                c.get(0).map_or(0, |m| m.start()),
                c[1].eq_ignore_ascii_case("button"),
                attributes(&c[2]),
            )
        })
        .collect();
    FORM.captures_iter(html).find_map(|c| {
        let attrs = attributes(&c[1]);
        if !attrs
            .get("method")
            .is_some_and(|m| m.eq_ignore_ascii_case("post"))
        {
            return None;
        }
        let whole = c.get(0)?;
        let mine = controls.iter().filter(|(at, _, a)| match a.get("form") {
            Some(id) => attrs.get("id") == Some(id),
            None => *at > whole.start() && *at < whole.end(),
        });
        let (mut inputs, mut buttons) = (Vec::new(), Vec::new());
        for (_, is_button, a) in mine {
            if *is_button
                || a.get("type")
                    .is_some_and(|t| t.eq_ignore_ascii_case("submit"))
            {
                buttons.push(a.clone());
            } else {
                inputs.push(a.clone());
            }
        }
        Some(Form {
            action: attrs.get("action").cloned().unwrap_or_default(),
            inputs,
            buttons,
        })
    })
}

/// What a form submission was, for callers that care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Login,
    Consent,
    Other,
}

/// Fields for a form: a login form (it has a password input) gets the
/// credentials; any other form (consent, logout confirmation) its hidden
/// inputs plus its "yes" button (decision=allow if present).
fn fill(form: &Form, username: &str, password: &str) -> (Submitted, Vec<(String, String)>) {
    let kind_of = |a: &Attrs| {
        a.get("type")
            .map_or("text".to_owned(), |t| t.to_ascii_lowercase())
    };
    let is_login = form.inputs.iter().any(|a| kind_of(a) == "password");
    let mut fields = Vec::new();
    for input in &form.inputs {
        let Some(name) = input.get("name") else {
            continue;
        };
        let kind = kind_of(input);
        if ["button", "image", "reset", "checkbox", "radio"].contains(&kind.as_str()) {
            continue;
        }
        let value = if is_login && name == "username" {
            username.to_owned()
        } else if is_login && kind == "password" {
            password.to_owned()
        } else {
            input.get("value").cloned().unwrap_or_default()
        };
        fields.push((name.clone(), value));
    }
    if is_login {
        return (Submitted::Login, fields);
    }
    let named: Vec<&Attrs> = form
        .buttons
        .iter()
        .filter(|b| b.contains_key("name"))
        .collect();
    let value_is = |b: &&Attrs, v: &[&str]| {
        b.get("value")
            .is_some_and(|x| v.iter().any(|v| x.eq_ignore_ascii_case(v)))
    };
    let allow = named
        .iter()
        .find(|b| b["name"] == "decision" && value_is(b, &["allow"]));
    let button = allow
        .or_else(|| {
            named
                .iter()
                .find(|b| value_is(b, &["yes", "true", "confirm", "logout"]))
        })
        .or(named.first());
    if let Some(b) = button {
        fields.push((
            b["name"].clone(),
            b.get("value").cloned().unwrap_or_default(),
        ));
    }
    (
        if allow.is_some() {
            Submitted::Consent
        } else {
            Submitted::Other
        },
        fields,
    )
}

/// Follows the provider from `start` through redirects and forms until it
/// redirects to a URL starting with `done`; returns that URL and the forms
/// submitted on the way.
pub async fn browse(
    client: &Client,
    jar: &mut Jar,
    start: Url,
    done: &str,
    username: &str,
    password: &str,
) -> Result<(Url, Vec<Submitted>), String> {
    let mut url = start;
    let mut post: Option<Vec<(String, String)>> = None;
    let mut submitted = Vec::new();
    for _ in 0..20 {
        let mut req = match &post {
            None => client.get(url.clone()),
            Some(fields) => client.post(url.clone()).form(fields),
        };
        if let Some(cookies) = jar.header() {
            req = req.header(header::COOKIE, cookies);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        jar.store(resp.headers());
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok());
            let next = url
                .join(location.ok_or("redirect without Location")?)
                .map_err(|e| e.to_string())?;
            let _ = resp.bytes().await;
            if next.as_str().starts_with(done) {
                return Ok((next, submitted));
            }
            (url, post) = (next, None);
            continue;
        }
        let html = resp.text().await.map_err(|e| e.to_string())?;
        let form = post_form(&html).ok_or_else(|| format!("{status} without a form at {url}"))?;
        let (kind, fields) = fill(&form, username, password);
        if kind == Submitted::Login && submitted.last() == Some(&Submitted::Login) {
            return Err(format!("login rejected ({status})"));
        }
        submitted.push(kind);
        url = if form.action.is_empty() {
            url
        } else {
            url.join(&form.action).map_err(|e| e.to_string())?
        };
        post = Some(fields);
    }
    Err(format!(
        "no redirect to {done} within 20 steps (last {url})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_login_and_detached_buttons() {
        let html = r#"<form method="post" action="/login?x=1&amp;y=2"><input type="hidden" name="csrf" value="a&#39;b">
            <input name="username"><input type="password" name="password"></form>"#;
        let form = post_form(html).expect("form");
        assert_eq!(form.action, "/login?x=1&y=2");
        let (kind, fields) = fill(&form, "u", "p");
        assert_eq!(kind, Submitted::Login);
        assert!(fields.contains(&("csrf".into(), "a'b".into())));
        assert!(fields.contains(&("password".into(), "p".into())));

        let html = r#"<form id="f" method="post" action="/end"><input type="hidden" name="xsrf" value="t"/></form>
            <button type="submit" form="f" value="yes" name="logout">Yes</button>"#;
        let (kind, fields) = fill(&post_form(html).expect("form"), "u", "p");
        assert_eq!(kind, Submitted::Other);
        assert_eq!(
            fields,
            vec![("xsrf".into(), "t".into()), ("logout".into(), "yes".into())]
        );
    }
}

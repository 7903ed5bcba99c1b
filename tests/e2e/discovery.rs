//! Discovery and JWKS, read by the `openidconnect` crate.

use openidconnect::JsonWebKey;

use crate::helpers::{TestApp, http};

async fn discovery_document_is_complete(app: &TestApp) {
    let meta = app.metadata().await;
    assert_eq!(meta.issuer().as_str(), app.base);
    assert_eq!(meta.authorization_endpoint().as_str(), app.url("/authorize"));
    assert_eq!(meta.token_endpoint().unwrap().as_str(), app.url("/token"));
    assert_eq!(meta.userinfo_endpoint().unwrap().as_str(), app.url("/userinfo"));
    // Both signing algorithms are published with their keys.
    let kty: Vec<String> = meta.jwks().keys().iter().map(|k| format!("{:?}", k.key_type())).collect();
    assert!(kty.iter().any(|k| k.contains("RSA")), "{kty:?}");
    assert!(kty.iter().any(|k| k.contains("EllipticCurve")), "{kty:?}");

    let raw: serde_json::Value = http().get(app.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    for field in ["introspection_endpoint", "revocation_endpoint", "end_session_endpoint"] {
        assert!(raw[field].as_str().unwrap().starts_with(&app.base), "{field}: {raw}");
    }
    assert_eq!(raw["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(raw["backchannel_logout_supported"], true);
    for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(raw["grant_types_supported"].as_array().unwrap().contains(&serde_json::json!(grant)), "{raw}");
    }
    for scope in ["openid", "profile", "email", "phone", "offline_access", "department"] {
        assert!(raw["scopes_supported"].as_array().unwrap().contains(&serde_json::json!(scope)), "{raw}");
    }
}

async fn unknown_paths_and_methods_get_json_errors(app: &TestApp) {
    let r = http().get(app.url("/no-such-thing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let r = http().post(app.url("/token")).body(vec![b'a'; 100 * 1024]).header("content-type", "application/x-www-form-urlencoded").send().await.unwrap();
    assert_eq!(r.status(), 413);
}

/// Behind a TLS-terminating proxy the issuer is https: every URL uses it and
/// cookies are `Secure`. Configuration also comes from a file and the environment.
#[tokio::test]
async fn https_issuer_from_a_config_file_makes_cookies_secure() {
    crate::helpers::limited(async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("civichub.toml");
        std::fs::write(&config, "issuer = \"https://sso.example.gov.cn\"\nlog = \"warn\"\n").unwrap();
        let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, &["--config", config.to_str().unwrap()]).await;
        let doc: serde_json::Value = http().get(app.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["issuer"], "https://sso.example.gov.cn");
        assert_eq!(doc["token_endpoint"], "https://sso.example.gov.cn/token");
        let page = http().get(app.url("/login")).send().await.unwrap();
        let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
    }, String::new).await;
}

crate::both!(discovery_document_is_complete, unknown_paths_and_methods_get_json_errors);
